"""Driver kernels forked by a fork server (``driver.fork_server``, ``server.forked_drivers``): real kernels
without Java, each a process as a launched one would be (its own session, workdir, log, environment,
random numbers), recognised after a server restart, stopped like any driver; a launch the fork server
cannot serve starts a process of its own."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.processes import pid_alive
from dli_kernel.protocol import ENV_PREFIX, FORK_SERVER_MODULE
from dli_kernel.server import forked_drivers
from dli_kernel.server.driver_process import CONNECTION_FILE, PID_FILE, Driver, started_with
from dli_kernel.server.forked_drivers import ForkedDrivers
from dli_kernel.server.settings import ServerSettings
from dli_kernel.server.starter import DriverStarter
from dli_kernel.server.states import SessionStates
from tests.unit.manager_fakes import RecordingStore

pytestmark = pytest.mark.skipif(not forked_drivers.usable(), reason="kernels are forked on Linux only")

ENV = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
ENV["FORKED_DRIVER_TEST"] = "the fork server's environment"


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkedDrivers]:
    state_dir = tmp_path_factory.mktemp("state")
    served = ForkedDrivers(state_dir, dict(ENV))
    served.start()
    yield served
    served.close()


def started(forks: ForkedDrivers, name: str, env: dict[str, str] = ENV) -> Iterator[Driver]:
    workdir = forks._state_dir / "sessions" / name
    driver = forks.launch(workdir, workdir.parent / f"{name}.log", dict(env))
    try:
        driver.wait_ready(timeout=60)
        yield driver
    finally:
        driver.stop()


@pytest.fixture
def kernel(forks: ForkedDrivers) -> Iterator[Driver]:
    yield from started(forks, "a")


@pytest.fixture
def other(forks: ForkedDrivers) -> Iterator[Driver]:
    yield from started(forks, "b")


def fork_server_pid(forks: ForkedDrivers) -> int:
    assert forks._process is not None
    return forks._process.pid


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_forked_kernel_is_a_driver_process_of_its_own(forks: ForkedDrivers, kernel: Driver) -> None:
    assert kernel.call("1 + 1") == 2
    assert parent_of(kernel.pid) == fork_server_pid(forks)  # forked, not started by us
    assert (kernel.workdir / PID_FILE).read_text() == str(kernel.pid)
    facts = "(os.getcwd(), os.getsid(0) == os.getpid(), os.environ['FORKED_DRIVER_TEST'])"
    assert kernel.call(facts, "import os") == (str(kernel.workdir), True, ENV["FORKED_DRIVER_TEST"])
    # Its stderr, where the JVM and the runtime write, is the session's log.
    kernel.call("0", "import sys; sys.__stderr__.write('written to the log\\n'); sys.__stderr__.flush()")
    assert "written to the log" in (kernel.workdir.parent / "a.log").read_text()
    # What a kernel imports first is imported already.
    assert kernel.call(
        "all(m in sys.modules for m in ('pyspark.sql', 'pandas', 'ipykernel.ipkernel'))", "import sys"
    )


def test_forked_kernels_draw_random_numbers_of_their_own(kernel: Driver, other: Driver) -> None:
    draw = "(random.random(), float(numpy.random.random()))"
    setup = "import random, numpy"
    first, second = kernel.call(draw, setup), other.call(draw, setup)
    assert first[0] != second[0] and first[1] != second[1]


def test_a_forked_kernel_is_recognised_as_its_state_dirs_after_a_restart(
    forks: ForkedDrivers, kernel: Driver, tmp_path: Path
) -> None:
    assert started_with(kernel.pid, kernel.workdir / CONNECTION_FILE) is True
    assert Driver.attach(kernel.workdir) is not None
    # Its command line is the fork server's: it names the state dir, not another one.
    elsewhere = tmp_path / "other-state" / "sessions" / "a" / CONNECTION_FILE
    assert started_with(kernel.pid, elsewhere) is False


def test_stop_leaves_no_process_behind(forks: ForkedDrivers) -> None:
    for driver in started(forks, "stopped"):
        pid = driver.pid
        child = driver.call("subprocess.Popen(['sleep', '300']).pid", "import subprocess")
    deadline = time.monotonic() + 10
    while (pid_alive(pid) or pid_alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid) and not pid_alive(child)  # gone, and no zombie left in the fork server


def test_a_kernel_that_exits_leaves_no_zombie(forks: ForkedDrivers) -> None:
    for driver in started(forks, "exits"):
        pid = driver.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid)
        assert not driver.is_alive()


def test_a_launch_with_another_environment_starts_a_process_of_its_own(forks: ForkedDrivers) -> None:
    for driver in started(forks, "own", env={**ENV, "FORKED_DRIVER_TEST": "a proxy user's"}):
        assert parent_of(driver.pid) == os.getpid()
        assert b"ipykernel_launcher" in Path(f"/proc/{driver.pid}/cmdline").read_bytes()
        assert driver.call("os.environ['FORKED_DRIVER_TEST']", "import os") == "a proxy user's"


def test_a_bad_request_is_answered_and_the_fork_server_goes_on(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", FORK_SERVER_MODULE, str(tmp_path)],
        cwd=tmp_path,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        assert json.loads(server.stdout.readline()) == {"state": "ready"}
        for bad in ("not json", json.dumps({"workdir": str(tmp_path)})):
            server.stdin.write(bad + "\n")
            server.stdin.flush()
            assert "error" in json.loads(server.stdout.readline())
    finally:
        server.stdin.close()
        assert server.wait(timeout=10) == 0  # its stdin closed: it ends


def test_a_failed_fork_server_falls_back_to_processes_of_their_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = ForkedDrivers(tmp_path, dict(ENV))
    broken.start()
    os.kill(fork_server_pid(broken), signal.SIGKILL)
    try:
        with caplog.at_level(logging.WARNING, logger="dli_kernel.server"):
            for name in ("first", "second"):
                for driver in started(broken, name):
                    assert parent_of(driver.pid) == os.getpid()
                    assert driver.call("1") == 1
        warnings = [r.getMessage() for r in caplog.records if "processes of their own" in r.getMessage()]
        assert len(warnings) == 1, warnings  # said once
    finally:
        broken.close()


def test_close_ends_the_fork_server(tmp_path: Path) -> None:
    served = ForkedDrivers(tmp_path, dict(ENV))
    served.start()
    pid = fork_server_pid(served)
    served.close()
    assert not pid_alive(pid)
    served.close()  # twice is harmless


@pytest.mark.parametrize(("share_driver", "forked"), [(True, True), (False, False)])
def test_a_server_that_shares_drivers_forks_them(tmp_path: Path, share_driver: bool, forked: bool) -> None:
    """Where a session is ready once its kernel answers (sharing), kernels are forked; elsewhere the JVM's
    start dwarfs the kernel's, and drivers start as processes of their own. Injected launches are kept."""
    settings = ServerSettings(tmp_path, share_driver=share_driver)
    starter = DriverStarter(settings, SessionStates(RecordingStore(tmp_path / "sessions.db")))
    assert (starter.forks is not None) is forked
    assert (starter._launch == starter.forks.launch) if starter.forks else starter._launch == Driver.launch
    states = SessionStates(RecordingStore(tmp_path / "other.db"))
    injected = DriverStarter(settings, states, launch=lambda *args: pytest.fail("not run"))
    assert injected.forks is None
