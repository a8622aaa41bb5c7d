"""How the server runs its sessions: where their state lives, which Spark master, how drivers start."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dli_kernel.server.pool import REFILL_DELAY


@dataclass
class ServerSettings:
    state_dir: Path
    master: str = "local[*]"
    start_timeout: float = 180.0
    parallel_starts: int = max(2, os.cpu_count() or 2)  # drivers starting at once; more wait their turn
    keep_sessions_on_exit: bool = False
    python: str = sys.executable
    pool_size: int = 0  # drivers started ahead for sessions with the default spec
    pool_refill_delay: float = REFILL_DELAY
    reap_every: float = 1.0  # seconds between the reaper's checks of timeouts and drivers
