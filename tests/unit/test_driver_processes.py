"""A driver's stop leaves no process its code started: the process tree from /proc, with real (small)
processes standing in for the kernel and what session code starts; no Jupyter kernel, no Java."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.connect import write_connection_file

from dli_kernel.processes import ProcessId, descendants, is_running, process_id, process_table, stop_all
from dli_kernel.server.driver_process import Driver

WAIT = 10.0

# Stands in for a driver kernel: a child subreaper like one after bootstrap, starting what session code
# might: a child in its own session, a double-forked orphan (which the subreaper adopts), a plain child.
# It prints their pids, then waits to be stopped, ignoring SIGTERM as a stuck kernel would.
KERNEL = """
import os, signal, subprocess, sys, time
from dli_kernel.driver.runtime import _adopt_orphans
_adopt_orphans()
own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
sh = subprocess.run(
    ["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
)
print(own.pid, plain.pid, sh.stdout.strip(), flush=True)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(300)
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[tuple[Driver, list[ProcessId]]]:
    write_connection_file(str(tmp_path / "kernel.json"), ip="127.0.0.1")
    process = subprocess.Popen(
        [sys.executable, "-c", KERNEL], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    pids = [int(word) for word in process.stdout.readline().split()]
    started = [p for p in map(process_id, pids) if p is not None]
    assert len(started) == 3, f"the stand-in kernel did not start its three processes: {pids}"
    driver = Driver(tmp_path, process.pid, process)
    try:
        yield driver, started
    finally:
        for leftover in started:
            if is_running(leftover):
                os.kill(leftover[0], signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_gone(processes: list[ProcessId]) -> list[ProcessId]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        left = [p for p in processes if is_running(p)]
        if not left:
            return []
        time.sleep(0.05)
    return left


def test_the_tree_holds_children_in_other_sessions_and_adopted_orphans(
    kernel: tuple[Driver, list[ProcessId]],
) -> None:
    driver, started = kernel
    below = descendants(driver.pid)
    assert set(started) <= below
    assert all(process_table()[pid][0] == driver.pid for pid, _ in started)  # the orphan was adopted


def test_stop_leaves_no_process_the_code_started(kernel: tuple[Driver, list[ProcessId]]) -> None:
    driver, started = kernel
    driver.stop(grace=1.0)
    assert wait_gone(started) == []
    assert not is_running((driver.pid, 0)) and process_id(driver.pid) is None


def test_stop_after_the_kernel_died_finds_what_was_tracked(kernel: tuple[Driver, list[ProcessId]]) -> None:
    driver, started = kernel
    driver.track(process_table())
    os.kill(driver.pid, signal.SIGKILL)  # its children go to init: no parent link leads to them now
    deadline = time.monotonic() + WAIT
    while any(process_table().get(pid, (driver.pid, 0))[0] == driver.pid for pid, _ in started):
        assert time.monotonic() < deadline, "the children were never re-parented"
        time.sleep(0.05)
    driver.stop(grace=1.0)
    assert wait_gone(started) == []


def test_stop_all_spares_a_process_that_reused_a_pid() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = process_id(process.pid)
        assert me is not None
        assert stop_all({(me[0], me[1] + 1)}, grace=0.2) == set()  # another start time: not this one
        assert process.poll() is None
        assert stop_all({me}, grace=2.0) == set()
        assert process.wait(timeout=WAIT) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
