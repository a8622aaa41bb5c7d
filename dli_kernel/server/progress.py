"""A running statement's progress, as its driver last wrote it to the session's workdir."""

from __future__ import annotations

import json
from pathlib import Path

from dli_kernel.protocol import PROGRESS_FILE

# A statement is done only when its driver says so; task counts never make it look finished.
BEFORE_DONE = 0.99


def read_progress(workdir: Path, group: str | None) -> float | None:
    """Finished tasks / all tasks of job group ``group``'s Spark jobs; None when the file says nothing
    about it (missing, half-written, another statement's, no tasks yet): progress is a hint, so the
    caller keeps the value it had rather than fail the request."""
    try:
        counts = json.loads((workdir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(counts, dict) or counts.get("group") != group or not counts.get("total"):
        return None
    return float(min(counts["done"] / counts["total"], BEFORE_DONE))
