"""The PySpark kernel passes jupyter_kernel_test's protocol checks against the real embedded server."""

from __future__ import annotations

import os
from typing import Any

import jupyter_kernel_test
import pytest
from jupyter_client.manager import start_new_kernel

from tests.integration.conftest import Server, wait_no_new_sessions


class TestPySparkKernel(jupyter_kernel_test.KernelTests):
    kernel_name = "dli_pyspark"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    # Livy folds a statement's stderr into its text output; the kernel's stderr is the session's log,
    # which the driver process's own stderr feeds.
    code_stderr = "import sys; print('to the log', file=sys.__stderr__, flush=True)"
    code_generate_error = "raise ValueError('remote trouble')"
    code_display_data = [
        {"code": "display(spark.range(3).toPandas())", "mime": "text/html"},
        {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()", "mime": "image/png"},
    ]
    # A remote cell's value is the cell's Out[n] (the server's `outputs` extension).
    code_execute_result = [
        {"code": "21*2", "result": "42"},
        {"code": "spark.range(3).toPandas()", "mime": "text/html"},
    ]
    completion_samples = [{"text": "spark.rang", "matches": {"spark.range"}}]
    complete_code_samples = ["1 + 1", "print('x')"]
    incomplete_code_samples = ["for i in range(3):"]

    @classmethod
    def setUpClass(cls) -> None:
        pass  # the fixture below starts the kernel with the server's environment

    @classmethod
    def tearDownClass(cls) -> None:
        pass

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _kernel(cls, kernel_env: dict[str, Any], server: Server) -> Any:
        before = {s["id"] for s in server.live_sessions()}
        saved = dict(os.environ)
        os.environ.update(kernel_env["env"], JUPYTER_PATH=str(os.path.dirname(kernel_env["kernels"])))
        try:
            cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, startup_timeout=120)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        # The first cell waits for the session; the protocol checks use short timeouts.
        reply = cls.kc.execute_interactive("1", timeout=300)
        assert reply["content"]["status"] == "ok"
        # matplotlib's first import in the driver can take over a second on a busy machine, and a statement
        # that long shows a progress bar (display data without the figure) that the display check rejects.
        warm = cls.kc.execute_interactive(cls.code_display_data[1]["code"], timeout=300)
        assert warm["content"]["status"] == "ok"
        yield
        cls.kc.stop_channels()
        cls.km.shutdown_kernel(now=False)
        wait_no_new_sessions(server, before)
