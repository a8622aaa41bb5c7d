"""Scale per machine: shared-driver sessions beside one JVM per session, in one run.

    .venv/bin/python benchmarks/scale.py [--quick] [--sessions N] [--own-sessions M] [--json FILE]

Every figure is measured on servers of this run, shared (``--share-driver``) beside own JVM (today's
mode, one Spark JVM per session):

1. session create -> idle (POST to idle, raw HTTP), unpooled (``--pool 0``) and pooled (``--pool 1``);
   the first shared session of a server also starts the host JVM, and is reported apart;
2. first result of a new notebook on a running server: dli_pyspark kernel start -> its first ``1+1``
   reply (benchmarks/kernels.py), unpooled and pooled;
3. resident memory per idle session: the PSS (/proc/PID/smaps_rollup) of each session's processes, plus
   for shared the host JVM's growth per session; how many idle sessions fit in 16 GB from the measured
   per-session memory and fixed cost (server, host), predicted from a few sessions and checked by
   creating N (``--sessions``, ``--own-sessions``: at most 6 own JVMs on a small machine) and measuring
   the total;
4. load on those N sessions: one raw-HTTP client per session (benchmarks/server_load.py's), ``1+1``
   statements: throughput, median and p95, idle round trip;
5. ``%%sql -o`` of 10^7 rows (10^6 with ``--quick``) through a real kernel (benchmarks/big_results.py):
   time, kernel peak, peak/frame;
6. cold first result with no server running (benchmarks/cold_start.py), with and without its archive.

Targets of issue 16 are printed beside the figures (pass/miss); nothing asserts them. Progress goes to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import big_results
import cold_start
from report import Stat, number, verdict
from run import Context, Kernels, Server, Sizes, log, running_server, timed_first_result
from server_load import Client

from dli_kernel.install import install
from dli_kernel.processes import descendants, process_table
from dli_kernel.protocol import FORK_SERVER_MODULE

HERE = Path(__file__).resolve().parent
BUDGET_MB = 16 * 1024
MOST_OWN_JVMS = 6  # own-JVM sessions at once: about 500 MB and a start's CPU each, on 2 cores
SHARED, OWN = "shared", "own JVM"
MODE_ARGS = {SHARED: ("--share-driver",), OWN: ()}
# What issue 16 measured before its changes, for the figures that do not depend on sharing.
BEFORE_O_PEAK = "2.9x the frame at 10^6 rows"
BEFORE_COLD = 6.95

T = TypeVar("T")
Value = Stat | str | None  # a figure, why it is missing, or nothing to show


@dataclass
class Figure:
    section: str
    name: str
    shared: Value
    own: Value
    target: str = ""
    verdict: str = ""

    @property
    def ratio(self) -> float | None:
        if isinstance(self.shared, Stat) and isinstance(self.own, Stat) and self.own.median:
            return self.shared.median / self.own.median
        return None


@dataclass
class Figures:
    rows: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *rows: Figure) -> None:
        self.rows.extend(rows)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(f"note: {text}")

    def table(self) -> str:
        columns = (("figure", 50), (SHARED, 9), ("p95", 8), (OWN, 9), ("p95", 8), ("shared/own", 11))
        lines = ["".join(n.ljust(w) if i == 0 else n.rjust(w) for i, (n, w) in enumerate(columns))]
        section = None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines.append(f"-- {section}")
            cells = [row.name[:49].ljust(50)]
            for value, (_, width) in zip((row.shared, row.own), columns[1:5:2], strict=True):
                median, p95 = _cells(value)
                cells += [median.rjust(width), p95.rjust(8)]
            cells.append(("-" if row.ratio is None else f"{row.ratio:.3g}x").rjust(11))
            target = f"  {row.target}" + (f": {row.verdict.upper()}" if row.verdict else "")
            lines.append(("".join(cells) + (target if row.target else "")).rstrip())
        lines += ["", *(f"* {note}" for note in self.notes)] if self.notes else []
        return "\n".join(lines)

    def to_json(self) -> dict:
        def value(v: Value) -> dict | None:
            return asdict(v) if isinstance(v, Stat) else (None if v is None else {"unavailable": v})

        rows = [
            {**asdict(r), "shared": value(r.shared), "own": value(r.own), "ratio_shared_over_own": r.ratio}
            for r in self.rows
        ]
        return {"rows": rows, "notes": self.notes}


def _cells(value: Value) -> tuple[str, str]:
    if isinstance(value, Stat):
        return number(value.median), number(value.p95)
    return ("n/a", "") if isinstance(value, str) else ("-", "")


def stat(values: Sequence[float], scale: float = 1.0) -> Stat | str:
    return Stat.of(values, scale) if values else "not measured"


# -- processes and their memory ----------------------------------------------------------------------------


def pss_mb(pids: Sequence[int]) -> float:
    """The processes' proportional set size: pages shared between them (libraries) counted once."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024


def is_java(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    except OSError:
        return False


@dataclass
class Snapshot:
    """Memory of a server with its sessions: the server, the shared host (kernel + JVM), each session."""

    server_mb: float
    host_mb: float
    sessions_mb: list[float]

    @property
    def total_mb(self) -> float:
        return self.server_mb + self.host_mb + sum(self.sessions_mb)


def is_fork_server(pid: int) -> bool:
    try:
        return FORK_SERVER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def snapshot(server_pid: int, shared: bool) -> Snapshot:
    """Each child of the server with everything below it is a session's driver, or (shared) the host: the
    one child with a Java process below it. Sharing, those are the fork server's children, and the fork
    server itself is part of the server's fixed cost."""
    table = process_table()
    children = [pid for pid, (parent, _) in table.items() if parent == server_pid]
    server_mb = pss_mb([server_pid])
    for fork_server in [pid for pid in children if is_fork_server(pid)]:
        children.remove(fork_server)
        children += [pid for pid, (parent, _) in table.items() if parent == fork_server]
        server_mb += pss_mb([fork_server])
    host_mb, sessions = 0.0, []
    for child in children:
        tree = [child, *(pid for pid, _ in descendants(child, table))]
        if shared and any(is_java(pid) for pid in tree):
            host_mb += pss_mb(tree)
        else:
            sessions.append(pss_mb(tree))
    return Snapshot(server_mb, host_mb, sessions)


# -- 1 and 2: create -> idle, first result -----------------------------------------------------------------


def create_to_idle(server: Server) -> tuple[float, int]:
    """Seconds from the POST of a default session to its idle state (long-polled), and its id."""
    client = Client(server.url, server.token)
    began = time.perf_counter()
    created = client.post("/sessions", {"kind": "pyspark"})
    if created["state"] != "idle":  # a pooled one is idle at once; a long-poll would hold on that state
        client.wait_idle(created["id"], timeout=300)
    return time.perf_counter() - began, created["id"]


def delete(server: Server, session_id: int) -> None:
    server.http.delete(f"{server.url}/sessions/{session_id}", timeout=120)


@dataclass
class StartFigures:
    first_create: float | None = None  # a shared server's first session: the host starts too
    creates: list[float] = field(default_factory=list)
    first_results: list[float] = field(default_factory=list)


def measure_starts(ctx: Context, mode: str, pool: int, reps: int, result_reps: int) -> StartFigures:
    figures = StartFigures()
    args = (*MODE_ARGS[mode], "--pool", str(pool))
    with running_server(ctx, f"start-{mode.replace(' ', '-')}-{pool}", args) as server:
        if mode == SHARED and pool == 0:
            figures.first_create, session_id = create_to_idle(server)
            delete(server, session_id)
        for rep in range(reps):
            waited = server.wait_ready()
            seconds, session_id = create_to_idle(server)
            log(
                f"create -> idle, {mode}, pool {pool}, rep {rep + 1}: {seconds:.2f} s "
                f"(quiet after {waited:.0f} s)"
            )
            figures.creates.append(seconds)
            delete(server, session_id)
        with Kernels(ctx, server) as kernels:
            for rep in range(result_reps):
                server.wait_ready()
                kernel = kernels.ours(f"first-{rep}", start=False)
                figures.first_results.append(timed_first_result(kernel))
                log(f"first result, {mode}, pool {pool}, rep {rep + 1}: {figures.first_results[-1]:.2f} s")
                kernels.shutdown([kernel])
    return figures


def attempt(figures: Figures, what: str, measure: Callable[[], T]) -> T | None:
    """``measure()``, or None with a note: one mode that fails must not hide the other's figures."""
    try:
        return measure()
    except Exception as err:
        figures.note(f"{what}: failed: {type(err).__name__}: {err}")
        return None


def bench_starts(ctx: Context, figures: Figures, reps: int, result_reps: int) -> None:
    measured: dict[tuple[str, int], StartFigures] = {}
    for mode in (SHARED, OWN):
        for pool in (0, 1):
            run = partial(measure_starts, ctx, mode, pool, reps, result_reps)
            measured[mode, pool] = attempt(figures, f"starts, {mode}, pool {pool}", run) or StartFigures()
    section = f"1. session create -> idle, raw HTTP, reps={reps}"
    unpooled = stat(measured[SHARED, 0].creates)
    figures.add(
        Figure(
            section,
            "unpooled (--pool 0) (s)",
            unpooled,
            stat(measured[OWN, 0].creates),
            "shared < 1 s",
            verdict(unpooled.median < 1 if isinstance(unpooled, Stat) else None),
        ),
        Figure(
            section,
            "pooled (--pool 1) (s)",
            stat(measured[SHARED, 1].creates),
            stat(measured[OWN, 1].creates),
        ),
    )
    first = measured[SHARED, 0].first_create
    if first is not None:
        figures.add(Figure(section, "first shared session (the host starts too) (s)", Stat(first), None))
    section = f"2. new notebook's first result: kernel start -> 1+1 reply, running server, reps={result_reps}"
    for pool, label in ((0, "unpooled (--pool 0) (s)"), (1, "pooled (--pool 1) (s)")):
        figures.add(
            Figure(
                section,
                label,
                stat(measured[SHARED, pool].first_results),
                stat(measured[OWN, pool].first_results),
            )
        )


# -- 3 and 4: memory, sessions in 16 GB, load --------------------------------------------------------------


@dataclass
class MemoryFigures:
    per_session_mb: float  # a session's own processes plus, shared, the host's growth per session
    sessions_mb: list[float]
    host_growth_mb: float
    fixed_mb: float  # the server, and the host less what its sessions added
    fits: int
    predicted_total_mb: float  # at N, from the first few sessions
    measured_total_mb: float
    count: int


@dataclass
class LoadFigures:
    clients: int
    rate: float
    latencies: list[float]
    idle: list[float]
    errors: list[str]


def costs(one: Snapshot, many: Snapshot, count: int) -> tuple[float, float, float]:
    """From a snapshot with one session and one with ``count``: per-session memory, the host's growth per
    session, and the fixed cost (server, host without sessions)."""
    growth = (many.host_mb - one.host_mb) / (count - 1) if count > 1 else 0.0
    per_session = statistics.mean(many.sessions_mb) + growth
    return per_session, growth, many.server_mb + one.host_mb - growth


def grow(server: Server, ids: list[int], count: int) -> None:
    """Create sessions up to ``count``, wait until all are idle and each has run one ``1+1``."""
    client = Client(server.url, server.token)
    new = [client.start_session() for _ in range(count - len(ids))]
    for session_id in new:
        client.wait_idle(session_id, timeout=900)
        client.one_plus_one(session_id)
    ids.extend(new)
    server.wait_ready()


def measure_memory(server: Server, mode: str, count: int, ids: list[int]) -> MemoryFigures:
    shared = mode == SHARED
    sample = min(4 if shared else 2, count)
    grow(server, ids, 1)
    one = snapshot(server.pid, shared)
    grow(server, ids, sample)
    few = snapshot(server.pid, shared)
    per_sample, _, fixed_sample = costs(one, few, sample)
    log(f"memory, {mode}: {sample} sessions, {per_sample:.0f} MB each, fixed {fixed_sample:.0f} MB")
    grow(server, ids, count)
    many = snapshot(server.pid, shared)
    if len(many.sessions_mb) != count:
        raise RuntimeError(f"{mode}: {len(many.sessions_mb)} session processes under the server, not {count}")
    per_session, growth, fixed = costs(one, many, count)
    log(f"memory, {mode}: {count} sessions, {per_session:.0f} MB each, total {many.total_mb:.0f} MB")
    return MemoryFigures(
        per_session,
        many.sessions_mb,
        growth,
        fixed,
        math.floor((BUDGET_MB - fixed) / per_session),
        fixed_sample + count * per_sample,
        many.total_mb,
        count,
    )


def measure_load(server: Server, ids: list[int], statements: int, idle_reps: int) -> LoadFigures:
    client = Client(server.url, server.token)
    idle = [client.one_plus_one(ids[0]) for _ in range(idle_reps)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(ids))

    def run(session_id: int) -> None:
        own = Client(server.url, server.token)
        start.wait()
        for _ in range(statements):
            try:
                seconds = own.one_plus_one(session_id)
            except (RuntimeError, OSError) as err:
                with lock:
                    errors.append(f"session {session_id}: {err}")
                continue
            with lock:
                latencies.append(seconds)

    began = time.perf_counter()
    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(run, ids))
    wall = time.perf_counter() - began
    return LoadFigures(len(ids), len(latencies) / wall, latencies, idle, errors)


def measure_scale(ctx: Context, mode: str, count: int, statements: int) -> tuple[MemoryFigures, LoadFigures]:
    with running_server(ctx, f"scale-{mode.replace(' ', '-')}", (*MODE_ARGS[mode], "--pool", "0")) as server:
        ids: list[int] = []
        try:
            memory = measure_memory(server, mode, count, ids)
            log(f"load, {mode}: {count} clients x {statements} statements")
            return memory, measure_load(server, ids, statements, ctx.sizes.idle_round_trips)
        finally:
            for session_id in ids:
                delete(server, session_id)


def bench_scale(ctx: Context, figures: Figures, counts: dict[str, int], statements: int) -> None:
    memory: dict[str, MemoryFigures] = {}
    load: dict[str, LoadFigures] = {}
    for mode in (SHARED, OWN):
        run = partial(measure_scale, ctx, mode, counts[mode], statements)
        if (measured := attempt(figures, f"memory and load, {mode}", run)) is not None:
            memory[mode], load[mode] = measured
    if len(memory) < 2:
        return
    shared, own = memory[SHARED], memory[OWN]
    section = f"3. idle session memory (PSS), with {shared.count} shared | {own.count} own-JVM sessions"
    per = Stat(shared.per_session_mb)
    fits = Stat(shared.fits)
    figures.add(
        Figure(
            section,
            "per idle session, with host growth (MB)",
            per,
            Stat(own.per_session_mb),
            "shared <= 150 MB",
            verdict(per.median <= 150),
        ),
        Figure(section, "  its own processes (MB)", Stat.of(shared.sessions_mb), Stat.of(own.sessions_mb)),
        Figure(section, "  host JVM growth per session (MB)", Stat(shared.host_growth_mb), None),
        Figure(section, "fixed: server (+ host JVM) (MB)", Stat(shared.fixed_mb), Stat(own.fixed_mb)),
        Figure(
            section,
            "idle sessions in 16 GB (computed)",
            fits,
            Stat(own.fits),
            "shared >= 100",
            verdict(fits.median >= 100),
        ),
        Figure(
            section,
            "total at N: measured (MB)",
            Stat(shared.measured_total_mb),
            Stat(own.measured_total_mb),
        ),
        Figure(
            section,
            "total at N: predicted from the first few (MB)",
            Stat(shared.predicted_total_mb),
            Stat(own.predicted_total_mb),
        ),
    )
    clients = f"{load[SHARED].clients} shared | {load[OWN].clients} own-JVM"
    section = f"4. load: {clients} clients x {statements} 1+1, a session each, raw HTTP"
    figures.add(
        Figure(section, "statements per second", Stat(load[SHARED].rate), Stat(load[OWN].rate)),
        Figure(
            section,
            "latency under load (ms)",
            stat(load[SHARED].latencies, 1000),
            stat(load[OWN].latencies, 1000),
        ),
        Figure(
            section,
            "idle round trip, one client (ms)",
            stat(load[SHARED].idle, 1000),
            stat(load[OWN].idle, 1000),
        ),
        Figure(section, "errors", Stat(len(load[SHARED].errors)), Stat(len(load[OWN].errors))),
    )
    for mode in (SHARED, OWN):
        for error in load[mode].errors[:3]:
            figures.note(f"load, {mode}: {error}")
    if own.count < shared.count:
        figures.note(
            f"own JVM: {own.count} sessions and clients (at most {MOST_OWN_JVMS} own JVMs at once on this "
            "machine); its 16 GB figure is computed from them"
        )
    figures.note(
        "idle memory: after each session's first 1+1; PSS counts pages shared between processes once"
    )


# -- 5 and 6: big results, cold start ----------------------------------------------------------------------


def bench_big_results(tmp: Path, figures: Figures, rows: int) -> None:
    measured = big_results.run(tmp / "big", rows)["o"]
    ratio = measured["peak_mb"] / measured["frame_mb"]
    section = f"5. %%sql -o of {rows:,} rows through a kernel (the same in both modes)"
    figures.add(
        Figure(section, "time (s)", Stat(measured["seconds"]), None),
        Figure(section, "kernel peak (MB)", Stat(measured["peak_mb"]), None),
        Figure(section, "frame (MB)", Stat(measured["frame_mb"]), None),
        Figure(
            section, f"peak/frame (before: {BEFORE_O_PEAK})", Stat(ratio), None, "<= 2x", verdict(ratio <= 2)
        ),
    )


def bench_cold_start(tmp: Path, figures: Figures, reps: int) -> None:
    section = "6. cold first result, no server running: with the CDS archive | without (today)"
    measured = cold_start.measure(tmp / "cold", reps)
    after, before = stat(measured["seconds"]), stat(measured["seconds_without"])
    figures.add(
        Figure(
            section,
            "kernel start -> first 1+1 reply (s)",
            after,
            before,
            "<= 3 s",
            verdict(after.median <= 3 if isinstance(after, Stat) else None),
        ),
        Figure(
            section,
            "bare SparkSession start (s)",
            stat(measured["bare_with"]),
            stat(measured["bare_without"]),
        ),
    )
    figures.note(f"cold first result: the issue measured {BEFORE_COLD} s before its changes")


# -- the run -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, few sessions, 10^6 rows")
    parser.add_argument(
        "--sessions", type=int, help="shared sessions created and loaded (default 20, quick 5)"
    )
    parser.add_argument(
        "--own-sessions", type=int, help=f"own-JVM sessions (default 5, quick 2; at most {MOST_OWN_JVMS})"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    shared_count = args.sessions or (5 if args.quick else 20)
    own_count = args.own_sessions or (2 if args.quick else 5)
    if shared_count < 2 or not 2 <= own_count <= MOST_OWN_JVMS:
        parser.error(f"--sessions must be 2 or more, --own-sessions 2 to {MOST_OWN_JVMS}")
    reps, result_reps = (2, 1) if args.quick else (5, 3)
    statements = 10 if args.quick else 50
    rows = 1_000_000 if args.quick else 10_000_000

    figures = Figures()
    started, started_load = datetime.now(UTC), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dli-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        install(prefix=str(tmp))
        ctx = Context(tmp, Sizes.for_run(args.quick), tmp / "share/jupyter/kernels", "--pool")
        steps: list[tuple[str, Callable[[], None]]] = [
            ("create and first result", lambda: bench_starts(ctx, figures, reps, result_reps)),
            (
                "memory and load",
                lambda: bench_scale(ctx, figures, {SHARED: shared_count, OWN: own_count}, statements),
            ),
            ("big results", lambda: bench_big_results(tmp, figures, rows)),
            ("cold start", lambda: bench_cold_start(tmp, figures, result_reps)),
        ]
        for name, step in steps:
            log(f"{name}")
            try:
                step()
            except KeyboardInterrupt:
                figures.note(f"{name}: interrupted (Ctrl-C); everything it started has been stopped")
                break
            except Exception as err:  # one broken benchmark must not hide the others
                figures.note(f"{name}: failed: {type(err).__name__}: {err}")

    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"dli_kernel scale, {started:%Y-%m-%d %H:%M} UTC, commit {commit or '?'}, {os.cpu_count()} cores, "
        f"{'quick' if args.quick else 'full'} run; shared: --share-driver, own JVM: a JVM per session (today)"
    )
    ended_load = os.getloadavg()[0]
    if max(started_load, ended_load) > (os.cpu_count() or 1):
        busy = f"{started_load:.1f} at the start, {ended_load:.1f} at the end"
        figures.note(f"other work shared the machine: load average {busy}, above its core count")
    print(figures.table())
    if args.json:
        data = {"started": started.isoformat(), "commit": commit, "quick": args.quick, **figures.to_json()}
        Path(args.json).write_text(json.dumps(data, indent=1))
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
