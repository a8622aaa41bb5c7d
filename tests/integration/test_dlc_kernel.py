"""A kernel on DLC's action API: the embedded server answers it as Tencent Cloud DLC would, so what a
notebook does on DLC (run, interrupt, completion, %session, clean-up) is tested without a cloud."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Server, wait_no_new_sessions
from tests.integration.test_kernel import Kernel, text
from tests.integration.test_notebooks import dialect_env


def test_a_kernel_on_dlc_runs_interrupts_completes_and_cleans_up(
    kernel_env: dict[str, Any], server: Server
) -> None:
    kernel = Kernel(dialect_env(kernel_env, server, "dlc"), "dli_pyspark", server)
    try:
        session = kernel.session()
        assert session["owner"] == "AKIDnotebook"  # created by a signed CreateNotebookSession
        reply, outputs = kernel.execute("x = 21 * 2\nprint(x)")
        assert reply["status"] == "ok" and text(outputs) == "42\n"

        code = "import time\ntime.sleep(120)"
        reply = kernel.interrupted(code)  # CancelNotebookSessionStatement
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        statements = kernel.server.get(f"/sessions/{session['id']}/statements").json()["statements"]
        assert [s["state"] for s in statements if code in s["code"]] == ["cancelled"]

        reply, outputs = kernel.execute("print(x + 1)")  # the session and its variables are still there
        assert reply["status"] == "ok" and text(outputs) == "43\n"

        # DLC has no completion: the kernel answers with none, at once, and nothing fails.
        completion = kernel.client.complete("spark.rang", 10, reply=True, timeout=30)["content"]
        assert completion["status"] == "ok" and completion["matches"] == []

        reply, outputs = kernel.execute("%session info")
        assert reply["status"] == "ok"
        shown = "".join(o["content"]["data"]["text/plain"] for o in outputs if "data" in o["content"])
        assert "AKIDnotebook" in shown and "notebook-engine" in shown
    finally:
        kernel.shutdown()
    wait_no_new_sessions(server, kernel.before)  # DeleteNotebookSession on shutdown
