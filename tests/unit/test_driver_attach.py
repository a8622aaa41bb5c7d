"""A driver a previous server left is attached to only if its pid is still that kernel: after a reboot the
pid may be an unrelated process's, which a session's end would otherwise stop, with all it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dli_kernel.server.driver_process import CONNECTION_FILE, PID_FILE, Driver, started_with

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")


def test_a_reused_pid_is_not_attached(tmp_path: Path) -> None:
    (tmp_path / CONNECTION_FILE).write_text("{}")
    (tmp_path / PID_FILE).write_text(str(os.getpid()))  # alive, but no kernel of this workdir
    assert started_with(os.getpid(), tmp_path / CONNECTION_FILE) is False
    assert Driver.attach(tmp_path) is None


def test_a_kernel_started_with_the_connection_file_is_recognised(tmp_path: Path) -> None:
    connection_file = tmp_path / CONNECTION_FILE
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "-f", str(connection_file)]
    )
    try:
        # Until the child has exec'd, its command line is still this test's.
        deadline = time.monotonic() + 10.0
        while not started_with(process.pid, connection_file) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started_with(process.pid, connection_file) is True
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("started_in", "ours"), [("state/pool/3", True), ("other-state/sessions/7", False)])
def test_a_pooled_driver_moved_into_a_session_is_still_recognised(
    tmp_path: Path, started_in: str, ours: bool
) -> None:
    """A session that took a pooled driver has it in its own workdir, but the kernel's command line names
    the pool's connection file: a file of the same state dir is the server's own."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(30)",
            "-f",
            str(tmp_path / started_in / CONNECTION_FILE),
        ]
    )
    try:
        deadline = time.monotonic() + 10.0
        while b"-f" not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started_with(process.pid, tmp_path / "state" / "sessions" / "7" / CONNECTION_FILE) is ours
    finally:
        process.kill()
        process.wait()
