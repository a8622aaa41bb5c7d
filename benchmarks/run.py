"""Our kernel beside sparkmagic's pysparkkernel on one embedded server, with the floor no client can beat.

    .venv/bin/python benchmarks/run.py [--quick] [--json [FILE]] [--only NAME[,NAME...]]

Benchmarks (names for --only): round_trip, transfer, first_result, load. Each starts its own embedded
server, runs our dli_pyspark kernel and sparkmagic's pysparkkernel against it (alternating where both can
run at once), and stops every kernel, session and server it started, also on Ctrl-C. The peer is installed
into benchmarks/.peer-venv on first use (see peer.py). Targets from issue 6 are printed beside the
figures; nothing asserts them. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import peer
import requests
from common import (
    descendants,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    start_server,
    stop_server,
    wait_quiet,
)
from kernels import Cell, Kernel
from report import Report, Row, Stat, format_table, verdict
from table import query, setup_cell

from dli_kernel.install import install

HERE = Path(__file__).resolve().parent
BENCHES = ("round_trip", "transfer", "first_result", "load")
MB = 1024 * 1024


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Sizes:
    """How much each benchmark does: the issue's figures, or a few quick ones while developing."""

    round_trips: int
    transfer_rows: tuple[int, ...]
    transfer_reps: int
    first_result_reps: int
    load_clients: int
    load_statements: int
    idle_round_trips: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(10, (1_000, 10_000), 2, 1, 3, 10, 5)
        return cls(50, (100_000, 1_000_000), 3, 3, 20, 50, 20)


@dataclass
class Context:
    tmp: Path
    sizes: Sizes
    our_kernels: Path  # our kernelspecs, installed into a private prefix
    pool_option: str | None  # the server's warm-pool option, if it has one
    report: Report = field(default_factory=Report)


# -- servers, kernels, sessions ------------------------------------------------------------------


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Clean-up that a second Ctrl-C must not cut short: sessions and servers would be left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    token: str
    http: requests.Session

    @property
    def pid(self) -> int:
        return self.process.pid

    def extensions(self) -> list[str]:
        """What the server adds to Livy (GET /version lists it, where the server has any)."""
        return self.http.get(f"{self.url}/version", timeout=30).json().get("extensions", [])

    def wait_ready(self, timeout: float = 300) -> float:
        """Wait until a warm pool, if the server reports one (GET /pool), is full and the server and its
        drivers are quiet: no session being started or deleted. Returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            answer = self.http.get(f"{self.url}/pool", timeout=30)
            if answer.status_code != 200:
                break
            pool = answer.json()
            if pool.get("ready", 0) >= pool.get("size", 0):
                break
            time.sleep(0.5)
        wait_quiet(self.pid, timeout=max(10.0, timeout - (time.monotonic() - began)))
        return time.monotonic() - began

    def session_ids(self) -> set[int]:
        """Live sessions (ended ones are not listed by default)."""
        sessions = self.http.get(f"{self.url}/sessions", params={"size": 1000}, timeout=30).json()["sessions"]
        return {s["id"] for s in sessions}

    def wait_no_sessions(self, timeout: float = 180) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.session_ids():
                return True
            time.sleep(0.5)
        return False


@contextlib.contextmanager
def running_server(ctx: Context, name: str, extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.tmp))
    process, info = start_server(state_dir, extra_args, own_session=True)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {info['token']}"
    try:
        yield Server(process, info["url"], info["token"], http)
    finally:
        with no_interrupts():
            http.close()
            stop_server(process)


class Kernels:
    """Kernels started for one benchmark; all are shut down (deleting their sessions) at the end."""

    def __init__(self, ctx: Context, server: Server) -> None:
        self.ctx, self.server = ctx, server
        self.started: list[Kernel] = []

    def __enter__(self) -> Kernels:
        return self

    def __exit__(self, *exc: object) -> None:
        with no_interrupts():
            self.shutdown(self.started)

    def shutdown(self, kernels: list[Kernel]) -> None:
        def stop(kernel: Kernel) -> None:
            try:
                kernel.shutdown()
            except Exception as err:  # the other kernels must still be stopped
                log(f"{kernel.label}: shutdown failed: {type(err).__name__}: {err}")

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(kernels)))) as pool:
            list(pool.map(stop, kernels))
        for kernel in kernels:
            if kernel in self.started:
                self.started.remove(kernel)

    def _env(self) -> dict[str, str]:
        # A private Jupyter config and runtime: no user config file, and not the user's embedded server.
        return dict(
            os.environ,
            JUPYTER_CONFIG_DIR=str(self.ctx.tmp / "jupyter-config"),
            JUPYTER_RUNTIME_DIR=str(self.ctx.tmp / "jupyter-runtime"),
        )

    def ours(self, label: str = "ours", start: bool = True) -> Kernel:
        env = dict(
            self._env(),
            DLI_KERNEL_URL=self.server.url,
            DLI_KERNEL_DIALECT="local",
            DLI_KERNEL_TOKEN=self.server.token,
        )
        return self._add(Kernel(label, "dli_pyspark", self.ctx.our_kernels, env), start)

    def peer(self, label: str = "sparkmagic", start: bool = True) -> Kernel:
        conf_dir = self.ctx.tmp / f"sparkmagic-{self.server.url.rsplit(':', 1)[1]}"
        peer.write_config(conf_dir, self.server.url)
        env = peer.kernel_env(self._env(), conf_dir, self.server.token)
        return self._add(Kernel(label, peer.KERNEL_NAME, peer.kernels_dir(), env), start)

    def plain(self) -> Kernel:
        """A plain ipykernel from this Python, for the floor."""
        spec_dir = self.ctx.tmp / "plain-kernels"
        (spec_dir / "python3").mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3",
            "language": "python",
        }
        (spec_dir / "python3" / "kernel.json").write_text(json.dumps(spec))
        return self._add(Kernel("ipykernel", "python3", spec_dir, self._env()))

    def _add(self, kernel: Kernel, start: bool = True) -> Kernel:
        self.started.append(kernel)
        if start:
            kernel.start()
        return kernel


def printed_two(cell: Cell) -> bool:
    """A `1+1` cell worked: sparkmagic puts progress widgets' text before the result, so look at the end."""
    return cell.ok and cell.text.rstrip().endswith("2") and "An internal error" not in cell.text


def what_failed(cell: Cell, limit: int = 240) -> str:
    """One line for a failed cell: its error, or sparkmagic's message (which comes as ok text)."""
    text = cell.error or cell.text
    start = text.find("fatal error")  # sparkmagic: "The code failed because of a fatal error: <why>"
    if start < 0:
        start = text.find("An internal error")
    text = " ".join(text[max(start, 0) :].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def warm_up(kernel: Kernel, timeout: float = 900) -> Cell:
    """The first `1+1`: the kernel's session is created (or awaited) here."""
    cell = kernel.run("1+1", timeout=timeout)
    if not printed_two(cell):
        raise RuntimeError(f"{kernel.label}: the first 1+1 cell failed: {what_failed(cell)}")
    return cell


def http_round_trip(server: Server, session_id: int, long_poll: bool) -> float:
    """POST a `1+1` statement and GET it until it is available: with the server's long-poll where it has
    one, else with no sleep between polls."""
    url = f"{server.url}/sessions/{session_id}/statements"
    params = {"wait": "10"} if long_poll else None
    began = time.perf_counter()
    statement = server.http.post(url, json={"code": "1+1"}, timeout=30).json()
    while statement["state"] in ("waiting", "running"):
        statement = server.http.get(f"{url}/{statement['id']}", params=params, timeout=30).json()
    seconds = time.perf_counter() - began
    if statement["state"] != "available" or statement["output"]["data"].get("text/plain") != "2":
        raise RuntimeError(f"raw HTTP 1+1 failed: {str(statement.get('output'))[:300]}")
    return seconds


def server_memory(server: Server) -> tuple[float, float, int]:
    """The server's peak RSS, and the summed peak RSS and count of its drivers (each with its Spark JVM)."""
    below = descendants(server.pid)
    drivers = [pid for pid in below if _parent(pid) == server.pid]
    return peak_rss_mb(server.pid), sum(peak_rss_mb(pid) for pid in below), len(drivers)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0


# -- 1. cell round trip ----------------------------------------------------------------------------


def bench_round_trip(ctx: Context) -> None:
    n = ctx.sizes.round_trips
    bench = f"1. cell round trip: 1+1, execute_request -> execute_reply, n={n}"
    with running_server(ctx, "round-trip") as server, Kernels(ctx, server) as kernels:
        log("round trip: starting our kernel and waiting for its session")
        before = server.session_ids()
        ours = kernels.ours()
        warm_up(ours)
        our_session = min(server.session_ids() - before)
        log("round trip: starting sparkmagic's kernel and waiting for its session")
        theirs = kernels.peer()
        warm_up(theirs)
        plain = kernels.plain()
        warm_up(plain, timeout=60)
        long_poll = "wait" in server.extensions()

        times: dict[str, list[float]] = {"ours": [], "peer": [], "plain": [], "http": []}
        errors: dict[str, int] = {"ours": 0, "peer": 0}
        log(f"round trip: {n} cells each, alternating")
        sides = [("ours", ours), ("peer", theirs), ("plain", plain)]
        for i in range(n + 1):  # the first round warms every path up and is dropped
            # Rotated, so that no side always runs right after the same other one.
            for side, kernel in sides[i % 3 :] + sides[: i % 3]:
                cell = kernel.run("1+1", timeout=120)
                if not printed_two(cell):
                    errors[side] = errors.get(side, 0) + 1
                if i:
                    times[side].append(cell.seconds)
            seconds = http_round_trip(server, our_session, long_poll)
            if i:
                times["http"].append(seconds)

    ours_ms, peer_ms = Stat.of(times["ours"], 1000), Stat.of(times["peer"], 1000)
    http_ms, plain_ms = Stat.of(times["http"], 1000), Stat.of(times["plain"], 1000)
    ok = peer_ms.median >= 10 * ours_ms.median and ours_ms.median - http_ms.median <= 15
    polling = "long-poll GET" if long_poll else "GET without sleeps"
    ctx.report.add(
        Row(
            bench,
            "1+1 cell (ms); floor: raw HTTP statement",
            ours_ms,
            peer_ms,
            http_ms,
            ">=10x faster, <= floor + 15 ms",
            verdict(ok),
        ),
        Row(bench, "floor: plain local ipykernel 1+1 (ms)", None, None, plain_ms),
        Row(bench, "what ours adds to the raw HTTP floor (ms)", Stat(ours_ms.median - http_ms.median)),
    )
    ctx.report.note(f"round trip: the raw HTTP floor polls with {polling}")
    if any(errors.values()):
        ctx.report.note(f"round trip: failed cells: ours {errors['ours']}, sparkmagic {errors['peer']}")


# -- 2. result transfer ------------------------------------------------------------------------------


@dataclass
class TransferSide:
    kernel: Kernel
    has_local: bool = False  # a %%local cell magic, to look at the DataFrame in the kernel
    unavailable: str = ""  # why %%sql -o could not be measured on this side
    seconds: dict[int, list[float]] = field(default_factory=dict)
    peak_mb: dict[int, float] = field(default_factory=dict)
    growth_mb: dict[int, float] = field(default_factory=dict)
    df_mb: dict[int, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    dtypes: str = ""


def sql_cell(rows: int, sql: str | None = None) -> str:
    return f"%%sql -o df -n -1 -q\n{sql or query(rows)}"


def local_value(kernel: Kernel, expression: str) -> str | None:
    """Evaluate an expression in the kernel's own (local) Python through %%local; None if that fails."""
    cell = kernel.run(f"%%local\nprint(repr({expression}))", timeout=120)
    if not cell.ok or "An internal error" in cell.text:
        return None
    return cell.text.strip().splitlines()[-1] if cell.text.strip() else None


def probe_transfer(side: TransferSide) -> None:
    """Does this kernel have %%local, and does %%sql -o work? Both are being written for our kernel."""
    kernel = side.kernel
    side.has_local = local_value(kernel, "1+1") == "2"
    cell = kernel.run(sql_cell(0, "SELECT 1 AS x UNION ALL SELECT 2"), timeout=300)
    if not cell.ok or "An internal error" in cell.text:
        side.unavailable = f"%%sql -o does not work yet: {what_failed(cell)}"
        return
    if side.has_local and local_value(kernel, "len(df)") != "2":
        side.unavailable = "%%sql -o ran but left no 2-row DataFrame `df` in the kernel"


def transfer_once(side: TransferSide, rows: int) -> None:
    kernel = side.kernel
    if side.has_local:  # the previous result must not count towards this one's peak
        kernel.run("%%local\ndf = None\nimport gc\ngc.collect()", timeout=120)
    before = rss_mb(kernel.pid)
    can_peak = reset_peak_rss(kernel.pid)
    cell = kernel.run(sql_cell(rows), timeout=3600)
    peak = peak_rss_mb(kernel.pid)
    if not cell.ok or "An internal error" in cell.text:
        side.failures.append(f"{rows} rows: {what_failed(cell)}")
        return
    if side.has_local:
        got = local_value(kernel, "(len(df), int(df.memory_usage(deep=True).sum()))")
        if got is None or int(got.strip("()").split(",")[0]) != rows:
            side.failures.append(f"{rows} rows: the DataFrame has {got} (rows, bytes)")
            return
        side.df_mb[rows] = int(got.strip("()").split(",")[1]) / MB
        side.dtypes = side.dtypes or local_value(kernel, "df.dtypes.astype(str).to_dict()") or ""
    side.seconds.setdefault(rows, []).append(cell.seconds)
    if can_peak:
        side.peak_mb[rows] = max(side.peak_mb.get(rows, 0.0), peak)
        side.growth_mb[rows] = max(side.growth_mb.get(rows, 0.0), peak - before)


def topandas_floor(ctx: Context) -> dict:
    log("transfer: the toPandas() floor in a local SparkSession")
    sizes = ctx.sizes
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "topandas_floor.py"),
            "--rows",
            *map(str, sizes.transfer_rows),
            "--reps",
            str(sizes.transfer_reps),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the toPandas floor failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_transfer(ctx: Context) -> None:
    sizes = ctx.sizes
    bench = f"2. result transfer: %%sql -o df -n -1 -q into pandas, reps={sizes.transfer_reps}"
    try:
        floor = topandas_floor(ctx)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as err:
        floor = {}
        ctx.report.note(f"transfer floor: {err}")
    with running_server(ctx, "transfer") as server, Kernels(ctx, server) as kernels:
        log("transfer: starting both kernels and creating the views in each session")
        sides = {"ours": TransferSide(kernels.ours()), "peer": TransferSide(kernels.peer())}
        for name, side in sides.items():
            warm_up(side.kernel)
            cell = side.kernel.run(setup_cell(sizes.transfer_rows), timeout=600)
            if not cell.ok:
                raise RuntimeError(f"{name}: creating the views failed: {cell.error or cell.text[-300:]}")
            probe_transfer(side)
            if side.unavailable:
                log(f"transfer: {name}: not available: {side.unavailable}")
        for rows in sizes.transfer_rows:
            for rep in range(sizes.transfer_reps):
                order = ["ours", "peer"] if rep % 2 == 0 else ["peer", "ours"]
                for name in order:
                    if not sides[name].unavailable:
                        log(f"transfer: {name}, {rows} rows, rep {rep + 1}")
                        transfer_once(sides[name], rows)

    def figure(side: TransferSide, values: dict[int, float | list[float]], rows: int) -> Stat | str:
        if side.unavailable:
            return f"not available: {side.unavailable}"
        if rows not in values:
            return "not measured: " + ("; ".join(side.failures) or "no figure from this kernel")
        value = values[rows]
        return Stat.of(value) if isinstance(value, list) else Stat(value)

    ours, theirs = sides["ours"], sides["peer"]
    for rows in sizes.transfer_rows:
        label = f"10^{len(str(rows)) - 1} rows" if str(rows).strip("0") == "1" else f"{rows:,} rows"
        floor_rows = floor.get(str(rows))
        floor_s = Stat.of(floor_rows["seconds"]) if floor_rows else "the floor did not run"
        floor_df = Stat(floor_rows["df_bytes"] / MB) if floor_rows else "the floor did not run"
        seconds = Row(
            bench,
            f"{label}: -o (s); floor: toPandas",
            figure(ours, ours.seconds, rows),
            figure(theirs, theirs.seconds, rows),
            floor_s,
        )
        peak = Row(
            bench,
            f"{label}: kernel peak RSS (MB)",
            figure(ours, ours.peak_mb, rows),
            figure(theirs, theirs.peak_mb, rows),
        )
        growth = Row(
            bench,
            f"{label}: kernel RSS growth (MB)",
            figure(ours, ours.growth_mb, rows),
            figure(theirs, theirs.growth_mb, rows),
        )
        frame = Row(
            bench,
            f"{label}: df.memory_usage(deep) (MB)",
            figure(ours, ours.df_mb, rows),
            figure(theirs, theirs.df_mb, rows),
            floor_df,
        )
        if rows == max(sizes.transfer_rows):
            seconds.target = ">=10x faster, <= 2x floor"
            if all(isinstance(v, Stat) for v in (seconds.ours, seconds.peer, floor_s)):
                seconds.verdict = verdict(
                    seconds.peer.median >= 10 * seconds.ours.median
                    and seconds.ours.median <= 2 * floor_s.median
                )
            # The "kernel peak memory at most 3x the DataFrame": judged as written (the whole
            # process), and without the kernel's baseline (imports, IPython), which no transfer can shrink.
            peak.target, growth.target = "<= 3x the DataFrame", "<= 3x the DataFrame (no baseline)"
            df_size = frame.ours if isinstance(frame.ours, Stat) else floor_df
            for row in (peak, growth):
                if isinstance(row.ours, Stat) and isinstance(df_size, Stat):
                    row.verdict = verdict(row.ours.median <= 3 * df_size.median)
        ctx.report.add(seconds, peak, growth, frame)
    for name, side in sides.items():
        for failure in side.failures:
            ctx.report.note(f"transfer, {'ours' if name == 'ours' else 'sparkmagic'}: failed: {failure}")
    for name, side in sides.items():
        if side.dtypes:
            ctx.report.note(f"transfer, {'ours' if name == 'ours' else 'sparkmagic'}: dtypes {side.dtypes}")
    if floor:
        dtypes = next(iter(floor.values()))["dtypes"]
        ctx.report.note(f"transfer, floor: dtypes {dtypes}")


# -- 3. first result ---------------------------------------------------------------------------------


def bench_first_result(ctx: Context) -> None:
    reps = ctx.sizes.first_result_reps
    bench = f"3. first result: kernel start -> first 1+1 reply, reps={reps}"
    cold_args = (ctx.pool_option, "0") if ctx.pool_option else ()
    cold: dict[str, list[float]] = {"ours": [], "peer": []}
    warm: dict[str, list[float]] = {"ours": [], "peer": []}

    for rep in range(reps):
        for name in ("ours", "peer") if rep % 2 == 0 else ("peer", "ours"):
            log(f"first result: cold server, {name}, rep {rep + 1}")
            with running_server(ctx, "cold", cold_args) as server, Kernels(ctx, server) as kernels:
                kernel = kernels.ours(start=False) if name == "ours" else kernels.peer(start=False)
                cold[name].append(timed_first_result(kernel))

    with running_server(ctx, "warm") as server, Kernels(ctx, server) as kernels:
        for rep in range(reps):
            for name in ("ours", "peer") if rep % 2 == 0 else ("peer", "ours"):
                waited = server.wait_ready()  # a warm pool has refilled, deleted sessions are gone
                log(f"first result: warm server (quiet after {waited:.0f} s), {name}, rep {rep + 1}")
                kernel = kernels.ours(start=False) if name == "ours" else kernels.peer(start=False)
                warm[name].append(timed_first_result(kernel))
                kernels.shutdown([kernel])

    pool = f"{ctx.pool_option} 0" if ctx.pool_option else "no warm pool"
    warm_pool = "its default warm pool" if ctx.pool_option else "no warm pool (the server has no --pool)"
    ours_warm = Stat.of(warm["ours"])
    ctx.report.add(
        Row(bench, f"cold server, fresh ({pool}) (s)", Stat.of(cold["ours"]), Stat.of(cold["peer"])),
        Row(
            bench,
            "warm server, running, quiet (s)",
            ours_warm,
            Stat.of(warm["peer"]),
            None,
            "< 1.5 s",
            verdict(ours_warm.median < 1.5),
        ),
    )
    ctx.report.note(f"first result: the warm server ran with {warm_pool}")


def timed_first_result(kernel: Kernel) -> float:
    kernel.start()
    began = kernel.started_at
    cell = warm_up(kernel)
    return cell.replied_at - began


# -- 4. load ---------------------------------------------------------------------------------------


@dataclass
class LoadFigures:
    idle: list[float]
    latencies: list[float]
    wall: float
    errors: list[str]
    server_peak_mb: float
    drivers_peak_mb: float
    drivers: int


def load_side(ctx: Context, server: Server, kernels: Kernels, name: str) -> LoadFigures:
    sizes = ctx.sizes
    reset_peak_rss(server.pid)
    log(f"load: {name}: starting {sizes.load_clients} kernels, each with its own session")
    clients = [
        kernels.ours(f"ours-{i}", start=False) if name == "ours" else kernels.peer(f"peer-{i}", start=False)
        for i in range(sizes.load_clients)
    ]
    everyone = list(clients)
    for client in clients:
        client.start()

    def first_cell(kernel: Kernel) -> str:
        try:
            warm_up(kernel, timeout=1800)
            return ""
        except RuntimeError as err:
            return str(err)

    # A session that cannot start under load is an error of the run, not a reason to stop it.
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        why_not = list(pool.map(first_cell, clients))
    errors: list[str] = [f"first cell: {why}" for why in why_not if why]
    clients = [kernel for kernel, why in zip(clients, why_not, strict=True) if not why]
    if not clients:
        raise RuntimeError(f"{name}: no kernel got a session: {errors[0]}")
    server.wait_ready()
    log(f"load: {name}: idle round trip on one client")
    idle = [clients[0].run("1+1", timeout=120).seconds for _ in range(sizes.idle_round_trips)]

    log(f"load: {name}: {len(clients)} clients x {sizes.load_statements} statements")
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(len(clients))
    stop = threading.Event()  # Ctrl-C: the clients finish their current cell and return

    def client_loop(kernel: Kernel) -> None:
        start.wait()
        for _ in range(sizes.load_statements):
            if stop.is_set():
                return
            cell = kernel.run("1+1", timeout=300)
            with lock:
                if printed_two(cell):
                    latencies.append(cell.seconds)
                else:
                    errors.append(f"{kernel.label}: {what_failed(cell)}")

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        try:
            list(pool.map(client_loop, clients))
        except BaseException:
            stop.set()
            start.abort()
            raise
    wall = time.perf_counter() - began
    server_peak, drivers_peak, drivers = server_memory(server)
    log(f"load: {name}: shutting the kernels down")
    kernels.shutdown(everyone)
    if not server.wait_no_sessions():
        ctx.report.note(f"load, {name}: sessions still live 180 s after its kernels were shut down")
    return LoadFigures(idle, latencies, wall, errors, server_peak, drivers_peak, drivers)


def bench_load(ctx: Context) -> None:
    sizes = ctx.sizes
    bench = f"4. load: {sizes.load_clients} clients x {sizes.load_statements} 1+1 statements, own sessions"
    results: dict[str, LoadFigures] = {}
    with running_server(ctx, "load") as server, Kernels(ctx, server) as kernels:
        for name in ("ours", "peer"):
            results[name] = load_side(ctx, server, kernels, name)
            server.wait_ready()
    ours, theirs = results["ours"], results["peer"]

    def rate(f: LoadFigures) -> Stat:
        return Stat(len(f.latencies) / f.wall)

    ours_lat, peer_lat = Stat.of(ours.latencies or [0.0], 1000), Stat.of(theirs.latencies or [0.0], 1000)
    ours_idle = Stat.of(ours.idle, 1000)
    ctx.report.add(
        Row(bench, "statements per second", rate(ours), rate(theirs)),
        Row(
            bench,
            "latency under load (ms)",
            ours_lat,
            peer_lat,
            None,
            "p95 <= 5x idle median",
            verdict(ours_lat.p95 is not None and ours_lat.p95 <= 5 * ours_idle.median),
        ),
        Row(bench, "idle round trip, one client (ms)", ours_idle, Stat.of(theirs.idle, 1000)),
        Row(
            bench,
            "errors",
            Stat(len(ours.errors)),
            Stat(len(theirs.errors)),
            None,
            "zero",
            verdict(not ours.errors),
            compare=False,
        ),
        Row(bench, "server peak RSS (MB)", Stat(ours.server_peak_mb), Stat(theirs.server_peak_mb)),
        Row(
            bench,
            f"drivers' peak RSS, sum (MB), {ours.drivers}|{theirs.drivers}",
            Stat(ours.drivers_peak_mb),
            Stat(theirs.drivers_peak_mb),
        ),
    )
    for name, figures in results.items():
        for error in figures.errors[:3]:
            ctx.report.note(f"load, {name}: {error}")
    ctx.report.note("load: the two sides ran one after the other on the same server, ours first")


# -- the run -------------------------------------------------------------------------------------------


def pool_option() -> str | None:
    """The server's warm-pool option, if `dli-kernel server --help` lists one."""
    help_text = subprocess.run(
        [sys.executable, "-m", "dli_kernel", "server", "--help"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"--pool[\w-]*", help_text)
    return found.group(0) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions and small sizes")
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(HERE / "results.json"),
        metavar="FILE",
        help="also write the figures as JSON (default benchmarks/results.json)",
    )
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma list of {', '.join(BENCHES)}")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")

    peer.ensure_installed(log)
    sizes = Sizes.for_run(args.quick)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="dli-bench-") as tmp:
        install(prefix=tmp)
        ctx = Context(Path(tmp), sizes, Path(tmp) / "share/jupyter/kernels", pool_option())
        interrupted = False
        for name in BENCHES:
            if name not in chosen:
                continue
            try:
                globals()[f"bench_{name}"](ctx)
            except KeyboardInterrupt:
                interrupted = True
                ctx.report.note(f"{name}: interrupted (Ctrl-C); everything it started has been stopped")
                break
            except Exception as err:  # one broken benchmark must not hide the others
                ctx.report.note(f"{name}: failed: {type(err).__name__}: {err}")
                log(f"{name} failed: {type(err).__name__}: {err}")

    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    head = (
        f"dli_kernel benchmarks, {started:%Y-%m-%d %H:%M} UTC, commit {commit or '?'}, "
        f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} run, "
        f"peer: sparkmagic {peer.SPARKMAGIC_VERSION}"
    )
    print(head)
    print(format_table(ctx.report))
    if args.json:
        data = {
            "started": started.isoformat(),
            "commit": commit,
            "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
            "quick": args.quick,
            "peer": f"sparkmagic {peer.SPARKMAGIC_VERSION}",
            "sizes": vars(sizes),
            **ctx.report.to_json(),
        }
        Path(args.json).write_text(json.dumps(data, indent=1))
        log(f"figures written to {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
