"""One session's driver: an IPython kernel process that holds a real SparkSession.

Running the driver as an ipykernel gives us, from well-kept code, what a Livy REPL has to build itself:
captured stdout/stderr, rich display data (figures, HTML), tracebacks, completion and interrupts.
The manager talks to it through ``jupyter_client`` over its connection file, which is also how a
restarted server finds a driver that outlived it.
"""

from __future__ import annotations

import ast
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from dli_kernel.processes import ProcessId, descendants, is_running, pid_alive, process_id, stop_all
from dli_kernel.protocol import DRIVER_KERNEL_OPTIONS, FORK_SERVER_MODULE
from dli_kernel.server import driver_code

CONNECTION_FILE = "kernel.json"
PID_FILE = "driver.pid"
# The driver's Spark JVM, "pid start-time", written once Spark is up: the session's health includes it,
# and a restarted server reads it to check a driver it reattaches to.
JVM_PID_FILE = "jvm.pid"
REPLY_GRACE = 2.0  # seconds to wait for an execute reply once the kernel said idle
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class DriverError(Exception):
    """The driver could not start, answer, or run a statement; the message says why."""


class DriverDied(DriverError):
    """The driver process is gone."""


class PortTaken(DriverError):
    """The driver could not bind a port of its connection file: something took it first."""


@dataclass
class ExecutionResult:
    """What one statement produced, in Livy's terms, and as the Jupyter outputs it was made of."""

    status: str  # "ok" | "error"
    execution_count: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)
    # In order: streams (one per run of a name), display data, the execute result; an error's, those
    # made before it. None where they are not known.
    outputs: list[dict[str, Any]] | None = None


class _OutputCollector:
    """Keeps a statement's IOPub messages as its Jupyter outputs, in order, and folds them into Livy's
    single ``data`` bundle.

    Livy's ``text/plain`` is stdout and stderr plus the last expression's repr, in order; richer
    mimetypes (figures, HTML, JSON) are kept beside it, the last one of each type winning. The outputs
    tell those apart for clients that can show them as a notebook would (the ``outputs`` extension).
    """

    def __init__(self, on_text: Callable[[str], None] | None) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.error: dict[str, Any] | None = None
        self.execution_count: int | None = None
        self._on_text = on_text
        # The chunks of the stream output last in ``outputs``, joined when another output begins: a
        # statement that prints a line at a time holds each line once, not once per join.
        self._chunks: list[str] = []

    def add(self, msg: dict[str, Any]) -> None:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "execute_input":
            self.execution_count = content.get("execution_count")
        elif kind == "stream":
            self._stream(str(content.get("name", "stdout")), content.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            self._close_stream()
            output: dict[str, Any] = {"output_type": kind, "data": dict(content.get("data", {}))}
            if content.get("metadata"):
                output["metadata"] = content["metadata"]
            self.outputs.append(output)
            plain = _livy_plain(output)
            if plain is not None and self._on_text:
                self._on_text(plain)
            self.data.update((mime, value) for mime, value in output["data"].items() if mime != "text/plain")
        elif kind == "error":
            self.error = content

    def _stream(self, name: str, text: str) -> None:
        last = self.outputs[-1] if self.outputs else None
        if not (last and last["output_type"] == "stream" and last["name"] == name):
            self._close_stream()
            self.outputs.append({"output_type": "stream", "name": name, "text": ""})
        self._chunks.append(text)
        if self._on_text:
            self._on_text(text)

    def _close_stream(self) -> None:
        if self._chunks:
            self.outputs[-1]["text"] = "".join(self._chunks)
            self._chunks = []

    def finish(self) -> tuple[list[dict[str, Any]], str]:
        """The outputs, and Livy's ``text/plain`` made of them."""
        self._close_stream()
        pieces = [
            output["text"] if output["output_type"] == "stream" else _livy_plain(output)
            for output in self.outputs
        ]
        return self.outputs, "".join(piece for piece in pieces if piece is not None)


def _livy_plain(output: dict[str, Any]) -> str | None:
    """What a display output adds to Livy's text: an expression's repr, a display's text when it has
    nothing richer (a figure's "<Figure size ...>" placeholder is noise next to its image)."""
    plain = output["data"].get("text/plain")
    if not isinstance(plain, str) or (output["output_type"] == "display_data" and len(output["data"]) > 1):
        return None
    return plain if plain.endswith("\n") else plain + "\n"


class Driver:
    """Starts, attaches to, talks to and stops one driver kernel process."""

    def __init__(
        self,
        workdir: Path,
        pid: int,
        process: subprocess.Popen | None = None,
        launch_log: tuple[Path, int] | None = None,  # the log, and its size before launch
    ) -> None:
        self.workdir = workdir
        self.pid = pid
        self._process = process  # None when attached after a server restart: not our child then
        self._client = self._connect()
        self._lock = threading.Lock()  # one request at a time on this client's shell socket
        self._launch_log = launch_log
        self._known: set[ProcessId] = set()  # processes seen below the kernel (``track``)
        # The kernel as a process: its pid, once it is gone, may be another process's, not to be stopped.
        self._kernel = process_id(pid)
        self._interrupted = False  # the running statement was interrupted (cancelled)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def launch(cls, workdir: Path, log_path: Path, env: dict[str, str]) -> Driver:
        """Start a kernel process whose stdout/stderr (and so the JVM's log) go to ``log_path``."""
        connection_file, log_size = _prepare(workdir, log_path)
        kernel = [sys.executable, "-m", "ipykernel_launcher"]
        command = [*kernel, "-f", str(connection_file), *DRIVER_KERNEL_OPTIONS]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: we can stop the kernel and its JVM together, and a server
                # restart does not take the driver down with it.
                start_new_session=True,
            )
        (workdir / PID_FILE).write_text(str(process.pid))
        return cls(workdir, process.pid, process, launch_log=(log_path, log_size))

    @classmethod
    def fork(cls, workdir: Path, log_path: Path, fork: Callable[[dict[str, str]], int]) -> Driver:
        """A kernel as ``launch`` starts it, forked by a fork server (``fork`` sends it the request and
        returns the new kernel's pid, see ``driver.fork_server``): no child of ours, but alike."""
        connection_file, log_size = _prepare(workdir, log_path)
        pid = fork({"workdir": str(workdir), "log": str(log_path), "connection_file": str(connection_file)})
        (workdir / PID_FILE).write_text(str(pid))
        return cls(workdir, pid, launch_log=(log_path, log_size))

    def _lost_a_port(self) -> bool:
        """Did the launched kernel fail to bind a port of its connection file?

        The ports are picked here and bound by the kernel a few seconds later; on a machine starting
        many sessions at once, a Spark JVM can bind one of them in between.
        """
        if self._launch_log is None:
            return False
        path, start = self._launch_log
        try:
            with open(path, "rb") as log:
                log.seek(start)
                return b"Address already in use" in log.read()
        except OSError:
            return False

    @classmethod
    def attach(cls, workdir: Path) -> Driver | None:
        """Reconnect to a driver that outlived the previous server, or None if it is gone."""
        try:
            pid = int((workdir / PID_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid) or not (workdir / CONNECTION_FILE).exists():
            return None
        if started_with(pid, workdir / CONNECTION_FILE) is False:
            return None  # the pid is now an unrelated process's (after a reboot): not ours to stop
        return cls(workdir, pid)

    def _connect(self) -> BlockingKernelClient:
        client = BlockingKernelClient(connection_file=str(self.workdir / CONNECTION_FILE))
        client.load_connection_file()
        client.start_channels()
        return client

    def is_alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return pid_alive(self.pid)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the kernel answers, or raise DriverError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Checked first: the kernel does not always exit when a bind fails (its other threads live on).
            if self._lost_a_port():
                raise PortTaken("a port of the driver's connection file was taken before it could bind it")
            if not self.is_alive():
                raise DriverDied("the driver process exited while starting")
            try:
                with self._lock:
                    self._client.kernel_info()
                    self._client.get_shell_msg(timeout=1.0)
                return
            except queue.Empty:
                continue
        raise DriverError(f"the driver did not answer within {timeout:.0f} s")

    def stop(self, grace: float = 5.0) -> None:
        """Stop the kernel and every process below it: the JVM, and whatever the session's code started,
        also in process groups or sessions of its own (``setsid``, ``start_new_session``)."""
        # Taken first: once the kernel has exited, its children are the init process's and the parent
        # links that lead to them are gone. Orphans the code made earlier were adopted by the kernel
        # (a child subreaper, see runtime.bootstrap), or are in what ``track`` saw.
        tree = self._tree() | self._known
        if self.is_alive():
            # A dying kernel may refuse the request; it is killed below anyway.
            with contextlib.suppress(Exception):
                self._client.shutdown()
            self._wait(grace, self.is_alive)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            self._wait(grace, lambda: _group_alive(self.pid))
        if self._process is not None:
            self._process.poll()
        stop_all(tree | self._tree(), grace)
        self._known = set()
        self._client.stop_channels()

    def track(self, table: dict[int, tuple[int, int]]) -> None:
        """Remember the processes now below the kernel (``table``: ``processes.process_table()``), so
        that ``stop`` finds them even if the kernel dies first and they lose their link to it."""
        if self._kernel and table.get(self.pid, (0, -1))[1] == self._kernel[1]:
            self._known = {p for p in self._known if is_running(p)} | descendants(self.pid, table)

    def _tree(self) -> set[ProcessId]:
        kernel = self._kernel
        return {kernel} | descendants(kernel[0]) if kernel and is_running(kernel) else set()

    def close(self) -> None:
        """Let go of the driver without stopping it (a server restart will attach again)."""
        self._client.stop_channels()

    def _wait(self, timeout: float, busy: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None:
                self._process.poll()  # reap our child, or its zombie keeps the group alive
            if not busy():
                return
            time.sleep(0.05)

    # -- requests ----------------------------------------------------------------------------

    def call(self, expression: str, setup: str = "", timeout: float | None = None) -> Any:
        """Run ``setup`` silently, then return ``expression``'s value (a Python literal) or raise."""
        with self._lock:
            msg_id = self._client.execute(
                setup, silent=True, user_expressions={"value": expression}, allow_stdin=False
            )
            reply = self._shell_reply(msg_id, timeout)
        content = reply["content"]
        if content["status"] != "ok":
            raise DriverError(_strip(f"{content.get('ename')}: {content.get('evalue')}"))
        value = content["user_expressions"]["value"]
        if value["status"] != "ok":
            raise DriverError(_strip(f"{value.get('ename')}: {value.get('evalue')}"))
        return ast.literal_eval(value["data"]["text/plain"])

    def execute(
        self,
        code: str,
        on_text: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
        data: dict[str, Any] | None = None,
        keep_final_newline: bool = False,
    ) -> ExecutionResult:
        """Run one statement to completion.

        ``on_started`` gets the request's id when the kernel starts executing it (the statement's Spark
        job group derives from it, and only from then on does an interrupt reach the statement);
        ``on_text`` sees the text output (stdout, stderr, reprs) as it comes; ``data`` goes with the
        request for the code in the driver to read (see ``runtime._request_data``).
        """
        collector = _OutputCollector(on_text)
        with self._lock:
            self._interrupted = False
            msg_id = _send_execute(self._client, code, data, stop_on_error=False)
            while True:
                try:
                    msg = self._client.get_iopub_msg(timeout=0.5)
                except queue.Empty:
                    if not self.is_alive():
                        raise DriverDied("the driver process exited while running the statement") from None
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "status" and msg["content"]["execution_state"] == "idle":
                    break
                if kind == "execute_input" and on_started:
                    on_started(msg_id)
                collector.add(msg)
            try:
                # The kernel replies before it says idle, so the reply is already here...
                reply = self._shell_reply(msg_id, timeout=REPLY_GRACE)["content"]
            except DriverDied:
                raise
            except DriverError:
                # ...unless an interrupt landed in ipykernel's own code, before the statement ran:
                # ipykernel then logs "KeyboardInterrupt caught in kernel" and sends no reply at all.
                return ExecutionResult(
                    status="error",
                    execution_count=collector.execution_count,
                    ename="KeyboardInterrupt",
                    evalue="interrupted before the statement started",
                )
        if collector.error or reply["status"] != "ok":
            jvm = jvm_exited(self.workdir)
            if jvm is not None:
                # Its Spark calls failed because the JVM is gone (py4j's ConnectionRefusedError): that
                # is the session's end, not this statement's error.
                raise DriverDied(jvm_exit_reason(jvm))
            error = collector.error or reply
            ename = error.get("ename", "Error")
            return ExecutionResult(
                status="error",
                execution_count=collector.execution_count,
                ename=ename,
                evalue=_strip(error.get("evalue", "")),
                traceback=_lines(error.get("traceback", [])),
                outputs=collector.finish()[0],
            )
        if self._interrupted:
            # Interrupts are sent only to cancel the running statement: one that ended well after all
            # (its code ignored them) is still cancelled, and what it made is not its result.
            return ExecutionResult(
                status="error",
                execution_count=collector.execution_count,
                ename="StatementCancelled",
                evalue="the statement was cancelled; it ran to its end anyway, and its output is dropped",
            )
        data = dict(collector.data)
        outputs, text = collector.finish()
        # Livy's Python REPL drops the final newline ("2", not "2\n"), its Scala REPL keeps it
        # ("res0: Int = 2\n"); its clients compare text exactly.
        data["text/plain"] = text if keep_final_newline else text.rstrip("\n")
        return ExecutionResult(
            status="ok", execution_count=collector.execution_count, data=data, outputs=outputs
        )

    def execute_scala(
        self,
        code: str,
        on_text: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
    ) -> ExecutionResult:
        """Run one Scala statement in the driver's Scala interpreter (started on first use)."""
        return self.execute(
            driver_code.scala_statement(), on_text, on_started, data={"code": code}, keep_final_newline=True
        )

    def interrupt(self) -> None:
        """SIGINT the kernel only: the JVM ignores it, our handler in the kernel cancels the jobs."""
        self._interrupted = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)

    def complete(self, code: str, cursor: int, timeout: float = 2.0) -> list[str]:
        """Completion candidates, or [] when the kernel is busy for longer than ``timeout``."""
        client = self._connect()  # its own sockets: the statement thread may be using ours
        try:
            reply = _reply_within(client, client.complete(code, cursor), timeout)
            return _whole_tokens(code, reply["content"]) if reply else []
        finally:
            client.stop_channels()

    def complete_scala(self, code: str, cursor: int, timeout: float) -> list[str]:
        """Scala completion candidates, or [] when the kernel does not answer within ``timeout``.

        The first Scala request starts the interpreter, so the caller gives it time when the session
        is idle; a busy kernel answers only after its statement, too late to be of use.
        """
        client = self._connect()  # its own sockets: the statement thread may be using ours
        try:
            msg_id = _send_execute(
                client,
                "",
                {"code": code, "cursor": cursor},
                silent=True,
                user_expressions={"value": driver_code.scala_completion()},
            )
            reply = _reply_within(client, msg_id, timeout)
            value = reply["content"].get("user_expressions", {}).get("value", {}) if reply else {}
            if value.get("status") != "ok":
                return []  # completion is a hint: a failure here is not the user's problem
            return ast.literal_eval(value["data"]["text/plain"])
        finally:
            client.stop_channels()

    def _shell_reply(self, msg_id: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                reply = self._client.get_shell_msg(timeout=0.5)
            except queue.Empty:
                if not self.is_alive():
                    raise DriverDied("the driver process exited") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise DriverError(f"the driver did not reply within {timeout:.0f} s") from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply


def _send_execute(
    client: BlockingKernelClient,
    code: str,
    data: dict[str, Any] | None,
    silent: bool = False,
    user_expressions: dict[str, str] | None = None,
    stop_on_error: bool = True,
) -> str:
    """``client.execute`` with ``data`` in the request's metadata, where the code in the driver reads it:
    jupyter_client's own method cannot add metadata, and data sent this way is never Python source."""
    content = {
        "code": code,
        "silent": silent,
        "store_history": not silent,
        "user_expressions": user_expressions or {},
        "allow_stdin": False,
        "stop_on_error": stop_on_error,
    }
    msg = client.session.msg("execute_request", content, metadata={"dli": data} if data else {})
    client.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def _reply_within(client: Any, msg_id: str, timeout: float) -> dict[str, Any] | None:
    """The shell reply to ``msg_id`` on ``client``, or None when none came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply
    return None


def _whole_tokens(code: str, reply: dict[str, Any]) -> list[str]:
    """IPython's matches replace code[cursor_start:cursor_end]; Livy's candidates are whole dotted names."""
    start = reply.get("cursor_start", len(code))
    dotted = re.search(r"(?:\w+\.)*$", code[:start])  # matches any string, if only with ""
    prefix = dotted.group() if dotted else ""
    return [prefix + match for match in reply.get("matches", [])]


def _strip(text: str) -> str:
    return _ANSI.sub("", text)


def _lines(traceback: list[str]) -> list[str]:
    """IPython's traceback entries as Livy's list of lines, each ending in a newline."""
    text = _strip("\n".join(traceback))
    return [line + "\n" for line in text.splitlines()]


def _prepare(workdir: Path, log_path: Path) -> tuple[Path, int]:
    """A new kernel's connection file (its ports picked), and the size of its log before it starts."""
    workdir.mkdir(parents=True, exist_ok=True)
    connection_file = workdir / CONNECTION_FILE
    write_connection_file(str(connection_file), ip="127.0.0.1")
    with open(log_path, "ab") as log:
        return connection_file, log.tell()


def started_with(pid: int, connection_file: Path) -> bool | None:
    """Whether process ``pid`` is a driver kernel of this server's state dir, rather than a later process
    that got its pid; None where there is no /proc to tell (macOS).

    A pooled driver was started in ``<state>/pool/<n>/`` and moved to ``<state>/sessions/<id>/`` when a
    session took it, so its command line names a connection file of the same state dir, not this one."""
    if not Path("/proc/self").exists():
        return None
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state_dir = connection_file.parent.parent.parent
    paths = [Path(os.fsdecode(argument)) for argument in arguments]
    if FORK_SERVER_MODULE.encode() in arguments:
        # Forked by a fork server, whose command line it has: the state dir that server was started for.
        return state_dir in paths
    return any(p.name == connection_file.name and p.parent.parent.parent == state_dir for p in paths)


def note_jvm(workdir: Path, info: dict[str, Any]) -> None:
    """Record the driver's Spark JVM, named in its app info (``runtime.app_info``), in its workdir."""
    jvm = process_id(info["jvmPid"]) if isinstance(info.get("jvmPid"), int) else None
    if jvm is not None:
        (workdir / JVM_PID_FILE).write_text(f"{jvm[0]} {jvm[1]}")


def jvm_exited(workdir: Path) -> int | None:
    """The pid of the driver's Spark JVM recorded in ``workdir`` if that JVM has exited; None while it
    runs, or when none is recorded (Spark not up yet, or a driver without one)."""
    try:
        pid, start = (int(word) for word in (workdir / JVM_PID_FILE).read_text().split())
    except (OSError, ValueError):
        return None
    return None if is_running((pid, start)) else pid


def jvm_exit_reason(pid: int) -> str:
    """What a session whose JVM exited says in its log and in its running statement's output."""
    return f"the session's Spark JVM (pid {pid}) exited; start a new session"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
