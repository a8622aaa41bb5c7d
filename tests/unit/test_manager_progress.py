"""A running statement's progress comes from its driver's progress file; a finished one's is 1.0 for good."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dli_kernel.protocol import PROGRESS_FILE
from dli_kernel.server.manager import ManagedSession, SessionManager, Statement
from dli_kernel.spec import SessionSpec
from tests.unit.manager_fakes import WAIT, FakeLauncher, Run, wait_state, wait_until


def started(manager: SessionManager, launcher: FakeLauncher) -> tuple[ManagedSession, Statement, Run]:
    session = manager.create(SessionSpec(kind="pyspark"))
    statement = manager.submit(session, "spark.range(10**9).count()", None, 5)
    run = launcher.next_driver().next_run()
    wait_until(manager, session, lambda: statement.job_group is not None, what="the statement's start")
    return session, statement, run


def write_progress(session: ManagedSession, group: str | None, done: int, total: int) -> None:
    (session.workdir / PROGRESS_FILE).write_text(json.dumps({"group": group, "done": done, "total": total}))


def test_progress_of_a_running_statement(manager: SessionManager, launcher: FakeLauncher) -> None:
    session, statement, run = started(manager, launcher)
    assert manager.statement(session, "0").progress == 0.0  # no file yet
    write_progress(session, statement.job_group, 3, 12)
    assert manager.statement(session, "0").progress == 0.25
    write_progress(session, "dli-another-statement", 11, 12)
    assert manager.statement(session, "0").progress == 0.25  # another statement's counts are not its
    write_progress(session, statement.job_group, 0, 0)
    assert manager.statement(session, "0").progress == 0.25  # no tasks yet: the last value stands
    (session.workdir / PROGRESS_FILE).write_text('{"group": "dli-')  # half written
    assert manager.statement(session, "0").progress == 0.25
    write_progress(session, statement.job_group, 12, 12)
    assert manager.statement(session, "0").progress == 0.99  # only the driver's answer makes it done
    run.finish()
    wait_state(manager, session, "available", statement=statement)
    assert manager.statement(session, "0").progress == 1.0


@contextlib.contextmanager
def fifo_writer(path: Path) -> Iterator[int]:
    """The write end of FIFO ``path``, opened once a reader has it open (the reader blocks in its read
    until this end writes and closes)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as err:
            assert err.errno == errno.ENXIO and time.monotonic() < deadline, "nobody read the progress file"
            time.sleep(0.001)
    try:
        yield fd
    finally:
        os.close(fd)


def test_a_statement_that_finishes_while_its_progress_is_read_keeps_1(
    manager: SessionManager, launcher: FakeLauncher
) -> None:
    session, statement, run = started(manager, launcher)
    # A FIFO as the progress file: the GET's read of it waits until the statement has finished.
    os.mkfifo(session.workdir / PROGRESS_FILE)
    seen: list[float] = []
    reader = threading.Thread(target=lambda: seen.append(manager.statement(session, "0").progress))
    reader.start()
    with fifo_writer(session.workdir / PROGRESS_FILE) as fd:
        run.finish()
        wait_state(manager, session, "available", statement=statement)
        assert statement.progress == 1.0
        os.write(fd, json.dumps({"group": statement.job_group, "done": 9, "total": 10}).encode())
    reader.join(WAIT)
    assert statement.progress == 1.0, "a progress read overwrote the finished statement's 1.0"
    assert seen == [1.0]
