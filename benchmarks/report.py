"""Figures of one run: ours beside the peer and the floor, as a printed table and as JSON."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from common import percentile


@dataclass
class Stat:
    """A median and p95 over ``n`` measurements; a single figure has ``n == 1`` and no p95."""

    median: float
    p95: float | None = None
    n: int = 1

    @classmethod
    def of(cls, values: Sequence[float], scale: float = 1.0) -> Stat:
        scaled = [v * scale for v in values]
        if len(scaled) == 1:
            return cls(scaled[0])
        return cls(statistics.median(scaled), percentile(scaled, 0.95), len(scaled))


# Not measured, and why: shown as "n/a" in the table with the reason in a note below it.
Missing = str
Value = Stat | Missing | None


@dataclass
class Row:
    bench: str
    figure: str
    ours: Value = None
    peer: Value = None
    floor: Value = None
    target: str = ""
    verdict: str = ""  # "pass", "miss" or "" (no target, or nothing to judge)
    compare: bool = True  # False where a ratio means nothing (counts of errors)

    @property
    def ratio(self) -> float | None:
        """Ours over the peer's median: below 1 is faster (or smaller) than sparkmagic."""
        if self.compare and isinstance(self.ours, Stat) and isinstance(self.peer, Stat) and self.peer.median:
            return self.ours.median / self.peer.median
        return None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_json(self) -> dict:
        def value(v: Value) -> dict | None:
            if isinstance(v, Stat):
                return asdict(v)
            return None if v is None else {"unavailable": v}

        return {
            "rows": [
                {
                    "bench": r.bench,
                    "figure": r.figure,
                    "ours": value(r.ours),
                    "peer": value(r.peer),
                    "floor": value(r.floor),
                    "ratio_ours_over_peer": r.ratio,
                    "target": r.target,
                    "verdict": r.verdict,
                }
                for r in self.rows
            ],
            "notes": self.notes,
        }


def number(x: float | None) -> str:
    if x is None:
        return "-"
    if float(x).is_integer() or abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cells(v: Value) -> tuple[str, str]:
    if isinstance(v, Stat):
        return number(v.median), number(v.p95)
    return ("n/a", "") if isinstance(v, str) else ("-", "")


COLUMNS = (("figure", 46), ("ours", 9), ("p95", 9), ("sparkmagic", 11), ("p95", 9), ("ours/peer", 10))
COLUMNS_AFTER = (("floor", 9), ("p95", 9))


def format_table(report: Report) -> str:
    """One section per benchmark; n/a cells are explained in the notes under the table."""
    header = [name.ljust(width) if i == 0 else name.rjust(width) for i, (name, width) in enumerate(COLUMNS)]
    header += [name.rjust(width) for name, width in COLUMNS_AFTER] + ["  target"]
    lines = ["".join(header).rstrip()]
    explained: dict[str, list[str]] = {}  # reason -> the figures it leaves out
    bench = None
    for row in report.rows:
        if row.bench != bench:
            bench = row.bench
            lines.append(f"-- {bench}")
        ours, ours95 = _cells(row.ours)
        peer, peer95 = _cells(row.peer)
        floor, floor95 = _cells(row.floor)
        ratio = "-" if row.ratio is None else f"{row.ratio:.3g}x"
        cells = [row.figure[: COLUMNS[0][1] - 1].ljust(COLUMNS[0][1])]
        widths = [w for _, w in COLUMNS[1:]] + [w for _, w in COLUMNS_AFTER]
        for text, width in zip((ours, ours95, peer, peer95, ratio, floor, floor95), widths, strict=True):
            cells.append(text.rjust(width))
        target = f"  {row.target}" + (f": {row.verdict.upper()}" if row.verdict else "") if row.target else ""
        lines.append(("".join(cells) + target).rstrip())
        for side, v in (("ours", row.ours), ("sparkmagic", row.peer), ("floor", row.floor)):
            if isinstance(v, str):
                explained.setdefault(f"{side}: {v}", []).append(row.figure)
    notes = [f"n/a, {reason} ({len(figures)} figures)" for reason, figures in explained.items()]
    notes += report.notes
    if notes:
        lines.append("")
        lines.extend(f"* {text}" for text in notes)
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("pass" if ok else "miss")
