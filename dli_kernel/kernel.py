"""The wrapper kernel: each cell is one statement on the notebook's remote Spark session.

The session is requested as the kernel starts and deleted when it shuts down or restarts. Blocking work
runs in a worker thread so the kernel keeps answering; interrupts arrive as messages (the kernelspec sets
``interrupt_mode: message``) and cancel the running statement.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel
from traitlets import Unicode

from dli_kernel import __version__
from dli_kernel.client import ClientError
from dli_kernel.config import Settings, embedded_endpoint, load_settings
from dli_kernel.render import render
from dli_kernel.session import Progress, RemoteSession, SessionFailed

LANGUAGES = {
    "pyspark": {
        "name": "python",
        "mimetype": "text/x-python",
        "file_extension": ".py",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "pygments_lexer": "ipython3",
    },
    "sql": {"name": "sql", "mimetype": "text/x-sql", "file_extension": ".sql", "codemirror_mode": "sql"},
    "spark": {
        "name": "scala",
        "mimetype": "text/x-scala",
        "file_extension": ".scala",
        "codemirror_mode": "text/x-scala",
    },
}
BANNERS = {"pyspark": "PySpark (DLI)", "sql": "Spark SQL (DLI)", "spark": "Spark (DLI)"}


class SparkKernel(Kernel):
    implementation = "dli_kernel"
    implementation_version = __version__
    kind = Unicode("pyspark", help="session and statement kind: pyspark, sql or spark").tag(config=True)

    @property
    def language_info(self) -> dict[str, Any]:  # type: ignore[override]
        return LANGUAGES[self.kind]

    @property
    def banner(self) -> str:  # type: ignore[override]
        return f"{BANNERS[self.kind]}: cells run on a remote Spark session (dli_kernel {__version__})"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._interrupted = threading.Event()
        self._settings: Settings | None = None
        self._session: RemoteSession | None = None
        self._startup_error: str | None = None
        self._new_session()

    # -- the session ---------------------------------------------------------------------------

    def _new_session(self) -> None:
        try:
            self._settings = load_settings()
            endpoint = self._settings.endpoint or embedded_endpoint()
        except Exception as err:  # noqa: BLE001 - shown by the first cell, the kernel stays up
            self._startup_error = str(err)
            return
        # A name of its own lets the client find the session again after an ambiguous create.
        spec = self._settings.defaults.replace(
            kind=self.kind, name=self._settings.defaults.name or f"notebook-{uuid.uuid4().hex[:12]}"
        )
        self._session = RemoteSession(endpoint.client(), spec)
        self._session.start()

    def _show_state(self, progress: Progress) -> None:
        self._update_status(f"session {progress.state} ({progress.elapsed:.0f} s)")

    def _update_status(self, text: str) -> None:
        content = {"data": {"text/plain": text}, "metadata": {}, "transient": {"display_id": self._status_id}}
        kind = "update_display_data" if self._status_shown else "display_data"
        self.session.send(self.iopub_socket, kind, content, self.get_parent("shell"))
        self._status_shown = True

    # -- execute -------------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        if not code.strip():
            return self._ok()
        self._interrupted.clear()
        self._status_id, self._status_shown = f"dli-status-{time.monotonic_ns()}", False
        if self._session is None:
            return self._error("SessionError", self._startup_error or "no session", [])
        try:
            return await asyncio.to_thread(self._run, code, silent)
        except SessionFailed as err:
            # The next cell gets a new session; say so now, so nobody wonders where their state went.
            self._session.close()
            self._new_session()
            return self._error("SessionLost", f"{err}\nThe next cell runs on a new session.", [])
        except ClientError as err:
            return self._error(type(err).__name__, str(err), [])

    def _run(self, code: str, silent: bool) -> dict[str, Any]:
        session = self._session
        session.wait_ready(on_state=self._show_state)
        statement, cancelled = session.run(
            code,
            kind=self.kind,
            on_progress=lambda p: self._update_status(f"running: {p.progress:.0%} ({p.elapsed:.0f} s)"),
            on_log=lambda lines: self._stream("stderr", "\n".join(lines) + "\n"),
            interrupted=self._interrupted,
        )
        if self._status_shown:
            self._update_status("")
        if cancelled:
            return self._error("KeyboardInterrupt", "the statement was cancelled", [])
        rendered = render(statement.output)
        if rendered.error:
            ename, evalue, traceback = rendered.error
            return self._error(ename, evalue, traceback)
        if not silent:
            if rendered.text:
                self._stream("stdout", rendered.text + "\n")
            for bundle in rendered.displays:
                self.send_response(self.iopub_socket, "display_data", {"data": bundle, "metadata": {}})
        return self._ok()

    def _stream(self, name: str, text: str) -> None:
        self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _ok(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": [],
            "user_expressions": {},
        }

    def _error(self, ename: str, evalue: str, traceback: list[str]) -> dict[str, Any]:
        content = {"ename": ename, "evalue": evalue, "traceback": traceback or [f"{ename}: {evalue}"]}
        self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    # -- interrupt, completion, shutdown ----------------------------------------------------------

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:  # type: ignore[override]
        self._interrupted.set()
        self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:  # type: ignore[override]
        matches: list[str] = []
        if self._session is not None:
            matches = await asyncio.to_thread(self._session.complete, code, cursor_pos, self.kind)
        return {
            "status": "ok",
            "matches": matches,  # whole dotted names, as Livy gives them: they replace the whole token
            "cursor_start": cursor_pos - len(_token_before(code, cursor_pos)),
            "cursor_end": cursor_pos,
            "metadata": {},
        }

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        # A restart starts a new kernel process, which asks for its own session.
        if self._session is not None:
            await asyncio.to_thread(self._session.close)
            self._session = None
        return {"status": "ok", "restart": restart}


def _token_before(code: str, cursor: int) -> str:
    """The dotted name the cursor ends: what Livy's whole-name candidates replace."""
    text = code[:cursor]
    start = len(text)
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_."):
        start -= 1
    return text[start:]


def main() -> None:
    IPKernelApp.launch_instance(kernel_class=SparkKernel)


if __name__ == "__main__":
    main()
