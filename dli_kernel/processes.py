"""Processes by pid, from /proc: whether one is alive, which ones descend from another, and stopping them.

A pid alone may be reused once its process is gone, so a process is named by its pid and start time
(``ProcessId``): signals go only to a process whose start time is still the one seen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# (pid, start time in clock ticks since boot): one process, never a later one that got the same pid.
ProcessId = tuple[int, int]


def pid_alive(pid: int) -> bool:
    """True for a running process (another user's counts); False for none or a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of ``pid`` from /proc, or None when it is gone (or no /proc)."""
    try:
        # The command name is in parentheses and may itself hold spaces or ")": split after the last one.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def process_id(pid: int) -> ProcessId | None:
    """The ``ProcessId`` of a live process, or None when it is gone or a zombie."""
    stat = _stat(pid)
    return None if stat is None or stat[0] == "Z" else (pid, stat[2])


def is_running(process: ProcessId) -> bool:
    """Whether this very process (not a later one with its pid) is still running."""
    return process_id(process[0]) == process


def process_table(zombies: bool = False) -> dict[int, tuple[int, int]]:
    """Every live process (and every zombie, with ``zombies``): pid -> (parent pid, start time). Empty
    without /proc."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and (zombies or stat[0] != "Z"):
                table[int(name)] = (stat[1], stat[2])
    return table


def descendants(root: int, table: dict[int, tuple[int, int]] | None = None) -> set[ProcessId]:
    """Every live process below ``root`` by parent links, whatever its process group or session."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[ProcessId] = set()
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.add((pid, table[pid][1]))
        todo.extend(children.get(pid, ()))
    return found


def wait_or_kill(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a child asked to end (signalled, or its stdin closed); killed if it is still there after
    ``timeout`` seconds."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def signal_all(processes: set[ProcessId], sig: int) -> None:
    """Send ``sig`` to each process still running as itself."""
    for process in processes:
        if is_running(process):
            try:
                os.kill(process[0], sig)
            except (ProcessLookupError, PermissionError):
                continue


def stop_all(processes: set[ProcessId], grace: float) -> set[ProcessId]:
    """SIGTERM these processes, SIGKILL those left after ``grace`` seconds; return those still running
    after that (none, unless another user's). What they start meanwhile is stopped with them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signalled: set[ProcessId] = set()
        deadline = time.monotonic() + grace
        while True:
            table = process_table()
            running = {p for p in processes if table.get(p[0], (0, -1))[1] == p[1]}
            # A process may fork while it is being stopped: what it started goes with it.
            for pid, _ in list(running):
                running |= descendants(pid, table)
            processes = running
            signal_all(processes - signalled, sig)
            signalled |= processes
            if not processes or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not processes:
            return set()
    return processes
