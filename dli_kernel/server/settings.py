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
    # Sessions of the default spec (pyspark or sql, no proxy user) attach to one driver per owner (its
    # JVM and SparkContext) rather than start their own; see shared_host.
    share_driver: bool = False
    # The class-data archive of Spark's classes every driver's JVM maps (server/cds.py); None: none.
    cds_archive: Path | None = None
    reap_every: float = 1.0  # seconds between the reaper's checks of timeouts and drivers
    # The address executors reach the driver at: loopback for local masters and a cluster on this machine;
    # an edge node's address when the cluster's workers are elsewhere.
    driver_host: str = "127.0.0.1"
    # Limits of a shared server; None: no limit.
    max_sessions_per_user: int | None = None  # live sessions of one user (a users file may say otherwise)
    max_starting: int | None = None  # sessions starting at once, server-wide; more are refused, not queued
    max_driver_memory_mb: int | None = None  # total driver memory of the live sessions
    max_body: int = 64 * 1024  # bytes of a request body
    max_statement_body: int = 10 * 1024 * 1024  # bytes of a statement's (or a DLC action's) body
    # What the server keeps, so that its memory and sessions.db stay bounded: an output whose JSON is larger
    # goes to a file in the session's directory (None: kept whole); ended sessions are forgotten, their
    # directories removed, once older than keep_ended_for seconds or beyond the newest keep_ended_sessions.
    output_spill_bytes: int | None = 1024 * 1024
    keep_ended_sessions: int = 200
    keep_ended_for: float = 7 * 24 * 3600.0
