"""What the benchmarks share: a private embedded server and raw HTTP to it, percentiles, process memory and
CPU (Linux /proc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import requests


def start_server(
    state_dir: Path, extra_args: Sequence[str] = (), own_session: bool = False
) -> tuple[subprocess.Popen, dict]:
    """A `dli-kernel server` on a free loopback port; returns the process and its server.json.

    ``own_session`` keeps a terminal's Ctrl-C away from the server, so the caller can first shut down its
    kernels (which delete their sessions) and then stop the server.
    """
    command = [sys.executable, "-m", "dli_kernel", "server", "--port", "0", "--state-dir", str(state_dir)]
    server = subprocess.Popen(
        [*command, *extra_args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=own_session,
    )
    server.stdout.readline()  # the banner: printed once server.json is written
    server_file = state_dir / "server.json"
    if not server_file.exists():
        stop_server(server)
        raise RuntimeError(f"the server exited with code {server.returncode} before writing {server_file}")
    return server, json.loads(server_file.read_text())


class ServerHTTP:
    """Raw HTTP to a server, with its token; JSON answers."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: object) -> dict:
        return self.http.get(f"{self.url}{path}", params=params, timeout=120).json()

    def post(self, path: str, body: dict) -> dict:
        return self.http.post(f"{self.url}{path}", json=body, timeout=120).json()


def stop_server(server: subprocess.Popen, timeout: float = 120) -> None:
    """SIGTERM (the server ends its sessions), then SIGKILL if it does not stop in time."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.stdout is not None:
        server.stdout.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM)."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Start a new high-water mark at the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name may hold spaces and parentheses: the fields start after the last ')'.
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: a server's drivers and the Spark JVMs they started."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime and stime
    return total


def wait_quiet(pid: int, timeout: float = 180, busy: float = 0.15) -> float:
    """Wait until ``pid`` and everything below it use less than ``busy`` CPU-seconds per second, twice in a
    row: a server has finished starting drivers (a warm pool, say) and deleting sessions. Returns the wait."""
    began = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - began < timeout:
        pids = [pid, *descendants(pid)]
        before = cpu_seconds(pids)
        time.sleep(1.0)
        quiet = quiet + 1 if cpu_seconds(pids) - before < busy else 0
    return time.monotonic() - began
