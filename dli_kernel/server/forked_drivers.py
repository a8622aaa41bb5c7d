"""Driver kernels forked by a fork server (``driver.fork_server``) instead of started as processes.

A shared driver's session is ready once its kernel answers and has attached to the host: the kernel's own
start (Python, ipykernel, PySpark imported) was most of it. The fork server has all that imported already,
so a kernel forked from it answers in a fraction of the time. It serves the drivers started for nobody
(no proxy user): the pool's, the shared hosts and the shared sessions, whose environment is one and the
same; a launch with another environment, and every launch once the fork server has failed, starts a
process of its own as ``Driver.launch`` does.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from dli_kernel.processes import wait_or_kill
from dli_kernel.protocol import FORK_SERVER_MODULE
from dli_kernel.server.driver_process import Driver, DriverError

log = logging.getLogger("dli_kernel.server")

FORK_SERVER_LOG = "fork-server.log"
READY_WAIT = 60.0  # for the fork server's imports, on a machine busy starting JVMs
ANSWER_WAIT = 10.0  # for one fork's pid


def usable() -> bool:
    """Whether kernels can be forked here: ``os.fork`` of a process without threads, on Linux."""
    return sys.platform.startswith("linux")


class ForkedDrivers:
    """Starts driver kernels for nobody through one fork server, started with the server's drivers'
    environment ``env``; ``launch`` has ``Driver.launch``'s signature and falls back to it."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self._state_dir = state_dir
        self._env = env
        self._lock = threading.Lock()  # one request and its answer at a time
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._failed = False

    def start(self) -> None:
        """Start the fork server; its imports run while the server goes on (``launch`` waits for them)."""
        with open(self._state_dir / FORK_SERVER_LOG, "ab") as errors:
            self._process = subprocess.Popen(
                [sys.executable, "-m", FORK_SERVER_MODULE, str(self._state_dir)],
                cwd=self._state_dir,
                env=self._env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                bufsize=0,
                # Not in the server's process group: a Ctrl-C to the server is for the server to handle.
                start_new_session=True,
            )

    def close(self) -> None:
        """Stop the fork server (its kernels are sessions' drivers, stopped as such); closing its stdin
        ends it."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        wait_or_kill(process, timeout=5)

    def launch(self, workdir: Path, log_path: Path, env: dict[str, str]) -> Driver:
        """A driver kernel forked by the fork server when ``env`` is the one it serves and it works; else
        one started as a process of its own."""
        if env == self._env and not self._failed:
            try:
                return Driver.fork(workdir, log_path, self._fork)
            except DriverError as error:
                self._fail(str(error))
        return Driver.launch(workdir, log_path, env)

    def _fork(self, request: dict[str, str]) -> int:
        with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.stdout is None:
                raise DriverError("the fork server is not running")
            if not self._ready:
                self._read(process.stdout, READY_WAIT)
                self._ready = True
            try:
                process.stdin.write((json.dumps(request) + "\n").encode())
            except OSError as error:
                raise DriverError(f"the fork server took no request ({error})") from None
            answer = self._read(process.stdout, ANSWER_WAIT)
        if not isinstance(answer.get("pid"), int):
            raise DriverError(f"the fork server forked nothing: {answer.get('error', answer)}")
        return int(answer["pid"])

    def _read(self, out: IO[bytes], timeout: float) -> dict[str, Any]:
        """The fork server's next answer line, within ``timeout`` seconds."""
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                raise DriverError(f"the fork server did not answer within {timeout:.0f} s")
            chunk = os.read(out.fileno(), 4096)
            if not chunk:
                raise DriverError("the fork server exited")
            line += chunk
        try:
            answer = json.loads(line)
        except ValueError:
            raise DriverError(f"the fork server answered {line[:200]!r}") from None
        return answer if isinstance(answer, dict) else {"error": answer}

    def _fail(self, reason: str) -> None:
        """Start kernels as processes of their own from now on; said once in the server's log."""
        self._failed = True
        log.warning(
            "driver kernels are started as processes of their own from now on: %s (its log: %s)",
            reason,
            self._state_dir / FORK_SERVER_LOG,
        )
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()
