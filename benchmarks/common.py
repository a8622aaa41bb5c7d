"""What the benchmarks share: a private embedded server and percentiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def start_server(state_dir: Path) -> tuple[subprocess.Popen, dict]:
    """A `dli-kernel server` on a free loopback port; returns the process and its server.json."""
    server = subprocess.Popen(
        [sys.executable, "-m", "dli_kernel", "server", "--port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    server.stdout.readline()  # the banner: printed once server.json is written
    return server, json.loads((state_dir / "server.json").read_text())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
