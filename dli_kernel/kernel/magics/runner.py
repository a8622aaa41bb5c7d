"""Running statements for the magics: the session made ready, the statement followed with a status line,
progress bar, log lines and Ctrl-C as cancel, and its outcome shown or raised as the remote error."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics
from IPython.display import publish_display_data

from dli_kernel.client import ClientError, StatementInfo
from dli_kernel.kernel.display import Result, StatusLine, progress_bar, render, write_log
from dli_kernel.kernel.holder import SessionHolder
from dli_kernel.kernel.remote_session import Progress, RemoteSession, SessionFailed
from dli_kernel.kernel.spark_log import LogFolder

BAR_AFTER = 1.0  # seconds a statement runs before its progress bar appears: fast cells stay quiet

# ``start(session, on_progress=, on_log=, interrupted=)``: submit and follow one statement.
Start = Callable[..., tuple[StatementInfo, bool]]


class RemoteError(Exception):
    """An error to show as-is: the remote one, or a session that could not be used."""

    def __init__(self, evalue: str, traceback: list[str]) -> None:
        super().__init__(evalue)
        self.traceback = traceback


_ERROR_TYPES: dict[str, type[RemoteError]] = {}


def remote_error(ename: str, evalue: str, traceback: list[str] | None = None) -> RemoteError:
    """An exception whose type is called ``ename``, so a notebook's error output names the remote error."""
    if ename not in _ERROR_TYPES:
        _ERROR_TYPES[ename] = type(ename, (RemoteError,), {"__module__": "dli_kernel.remote"})
    return _ERROR_TYPES[ename](evalue, traceback or [f"{ename}: {evalue}"])


def show_remote_error(shell: Any, etype: type, value: RemoteError, tb: Any, tb_offset: Any = None) -> list:
    """IPython's custom exception handler: the remote traceback only, none of this process's frames."""
    shell._showtraceback(etype, value, value.traceback)
    return value.traceback


class StatementRunner:
    """What every magic that runs code shares: the notebook's session holder and how a statement runs."""

    def __init__(self, holder: SessionHolder) -> None:
        self.holder = holder

    def run(self, code: str, kind: str, max_rows: int | None = None) -> dict[str, Any]:
        """Run one statement on the notebook's session; its ``output`` (ok), or raise the error."""
        return self.follow(
            lambda session, **follow: session.run(code, kind=kind, max_rows=max_rows, **follow)
        )

    def follow(self, start: Start, line: StatusLine | None = None) -> dict[str, Any]:
        """Run ``start`` with the cell's status line, progress bar, log lines and Ctrl-C as cancel;
        the statement's ok ``output``, or raise its error. ``line``: the status line to use, for a caller
        that goes on showing what follows the statement (a download) in the same line."""
        session = self.ready()
        interrupted = threading.Event()
        bar = StatusLine() if line is None else line
        began = time.monotonic()

        def progress(p: Progress) -> None:
            if p.elapsed >= BAR_AFTER:
                bar.show(progress_bar(p.progress, p.elapsed))

        log = LogFolder(self.holder.log_level)  # one per statement: its folds end with it
        on_log = None if log.level == "quiet" else lambda lines: write_log(log.feed(lines))
        try:
            with _interrupts_set(interrupted):
                statement, cancelled = start(
                    session, on_progress=progress, on_log=on_log, interrupted=interrupted
                )
        except SessionFailed as err:
            self.holder.drop(note=f"the previous session ended: {str(err).splitlines()[0]}")
            raise remote_error("SessionLost", f"{err}\nThe next cell runs on a new session.") from None
        except ClientError as err:
            raise remote_error(type(err).__name__, str(err)) from None
        finally:
            write_log([*log.flush(), *log.note()])  # the folds' counts, before the outcome is shown
        bar.finish(f"{'cancelled' if cancelled else 'done'} in {time.monotonic() - began:.1f} s")
        if cancelled:
            raise remote_error(
                "KeyboardInterrupt", "the statement was cancelled; the session is still usable."
            )
        output = statement.output or {}
        if output.get("status") == "error":
            rendered = render(output)
            replay(rendered.replay or [])  # what it printed before it failed, where the server kept it
            ename, evalue, traceback = rendered.error or ("Error", "", [])
            raise remote_error(ename, evalue, traceback)
        return output

    @staticmethod
    def show(output: dict[str, Any]) -> Result | None:
        """Show a statement's ok ``output``; the cell's value, for the magic to return as its ``Out[n]``.

        With its Jupyter outputs (the ``outputs`` extension) they are replayed in order and the value
        is the execute result's; a Livy output's text (prints and value in one) is printed, as ever."""
        rendered = render(output)
        if rendered.replay is not None:
            replay(rendered.replay)
            return None if rendered.result is None else Result(rendered.result)
        if rendered.text:
            sys.stdout.write(rendered.text if rendered.text.endswith("\n") else rendered.text + "\n")
            sys.stdout.flush()
        for bundle in rendered.displays:
            publish_display_data(bundle)
        return None

    def ready(self) -> RemoteSession:
        """The notebook's session, waited for with one updating line while it starts."""
        line = StatusLine()
        note, self.holder.replaced_note = self.holder.replaced_note, ""

        def on_state(p: Progress) -> None:
            if p.state not in ("idle", "busy"):
                line.show(f"session {p.state} ({p.elapsed:.0f} s)")

        current = self.holder.session
        try:
            session = self.holder.ready(on_state=on_state)
        except KeyboardInterrupt:
            raise remote_error(
                "KeyboardInterrupt", "stopped waiting; the session keeps starting in the background."
            ) from None
        except SessionFailed as err:
            if current is not None and current.ever_ready:
                self.holder.replaced_note = f"the previous session ended: {str(err).splitlines()[0]}"
                raise remote_error("SessionLost", f"{err}\nThe next cell runs on a new session.") from None
            raise remote_error("SessionFailed", f"{err}\nThe next cell tries a new session.") from None
        except ClientError as err:
            raise remote_error(type(err).__name__, str(err)) from None
        if line.shown or note:
            text = f"session {session.id} ready" + (f" after {line.elapsed:.1f} s" if line.shown else "")
            line.show(f"{text} ({note})" if note else text)  # a new session is said even when it was quick
        return session

    def require_session(self, command: str) -> str:
        """The id of the notebook's session, waited for if it is starting; a UsageError if it has none."""
        session = self.holder.session
        if session is None:
            raise UsageError(
                f"%session {command}: this notebook has no session yet (run a cell or %session start)"
            )
        info = session.info if session.info is not None else self.ready().info
        if info is None:
            raise UsageError(f"%session {command}: the session was closed while it started")
        return info.id


class RunnerMagics(Magics):
    """The base of the magics classes: each shares the one runner, and with it the notebook's holder."""

    def __init__(self, shell: Any, runner: StatementRunner) -> None:
        super().__init__(shell)
        self.runner = runner

    @property
    def holder(self) -> SessionHolder:
        return self.runner.holder

    @property
    def ipython(self) -> InteractiveShell:
        """The shell the magics are registered on (IPython's type allows None before that)."""
        if self.shell is None:
            raise RuntimeError("the magics are not registered on a shell")
        return self.shell


def replay(outputs: list[dict[str, Any]]) -> None:
    """Streams to the cell's stdout and stderr, displays published, in order."""
    for item in outputs:
        if item["output_type"] == "stream":
            stream = sys.stderr if item["name"] == "stderr" else sys.stdout
            stream.write(item["text"])
            stream.flush()  # before a display that follows, as the remote kernel sent them
        else:
            publish_display_data(item["data"], metadata=item.get("metadata") or None)


@contextlib.contextmanager
def _interrupts_set(event: threading.Event) -> Iterator[None]:
    """While a statement runs, Ctrl-C (or a kernel interrupt) asks to cancel it instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
