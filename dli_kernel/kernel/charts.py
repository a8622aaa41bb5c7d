"""Charts of a query's rows without code: a Vega-Lite spec built here (JupyterLab and VS Code draw it), a PNG
of the same spec for viewers that draw no Vega (nbconvert, GitHub), and a line of text."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import shlex
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dli_kernel.kernel.tables import Rows

if TYPE_CHECKING:
    from dli_kernel.kernel.display import Result

KINDS = ("bar", "line", "area", "scatter", "pie")
AGGREGATES = ("sum", "avg", "min", "max", "count")
VEGA_LITE_MIME = "application/vnd.vegalite.v5+json"
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier only: never fetched
MAX_CHART_ROWS = 10_000  # a spec carries its rows inline, in the notebook file: bounded
CHARTS_EXTRA = "pip install 'dli-kernel[charts]'"

_MARKS = {"bar": "bar", "line": "line", "area": "area", "scatter": "point", "pie": "arc"}
_VEGA_AGGREGATE = {"sum": "sum", "avg": "mean", "min": "min", "max": "max", "count": "count"}
_WIDTH, _HEIGHT = 480, 300


class ChartError(ValueError):
    """A chart that cannot be drawn from these rows: one sentence saying why and what would work."""


@dataclass(frozen=True)
class ChartOptions:
    kind: str = "bar"
    x: str | None = None
    y: tuple[str, ...] = ()
    agg: str | None = None

    def check(self) -> None:
        """What can be refused before any rows exist."""
        if self.kind not in KINDS:
            raise ChartError(f"unknown chart kind {self.kind!r}; the kinds are {', '.join(KINDS)}")
        if self.agg is not None and self.agg not in AGGREGATES:
            raise ChartError(
                f"unknown aggregation {self.agg!r}; the aggregations are {', '.join(AGGREGATES)}"
            )
        if self.kind == "pie" and len(self.y) > 1:
            raise ChartError("a pie chart draws one -y column (its slices); give one, or use bar for several")


def frame_types(frame: Any) -> tuple[list[str], list[str]]:
    """A pandas DataFrame's columns as Vega-Lite types, and their dtypes' names."""
    import pandas as pd  # a frame is here, so pandas is

    types, type_names = [], []
    for _, column in frame.items():
        dtype = column.dtype
        type_names.append(str(dtype))
        if pd.api.types.is_bool_dtype(dtype):
            types.append("nominal")
        elif pd.api.types.is_numeric_dtype(dtype):
            types.append("quantitative")
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            types.append("temporal")
        else:  # Arrow brings decimals and dates as objects: their first value says what they are
            first = column.dropna().head(1).tolist()
            sample = first[0] if first else None
            if isinstance(sample, decimal.Decimal | int | float) and not isinstance(sample, bool):
                types.append("quantitative")
            elif isinstance(sample, datetime.date):
                types.append("temporal")
            else:
                types.append("nominal")
    return types, type_names


def frame_rows(frame: Any, total: int | None = None, limit: int = MAX_CHART_ROWS + 1) -> Rows:
    """A pandas DataFrame's first ``limit`` rows as chart rows; ``total``: the query's rows, when the
    frame holds fewer."""
    types, type_names = frame_types(frame)
    rows = [list(row) for row in frame.head(limit).itertuples(index=False, name=None)]
    names = [str(column) for column in frame.columns]
    return Rows(names, types, rows, len(frame) if total is None else total, type_names)


def chart_hint(names: list[str], types: list[str], prefix: str = "%%sql") -> str | None:
    """A one-line suggestion for a result of one label column and one numeric column."""
    if len(names) != 2 or sorted(types) == ["quantitative", "quantitative"] or "quantitative" not in types:
        return None
    y = types.index("quantitative")
    x_name, y_name = names[1 - y], names[y]
    return f"chart it: {prefix} --chart bar -x {shlex.quote(x_name)} -y {shlex.quote(y_name)}"


def build_spec(
    data: Rows, options: ChartOptions, all_rows_hint: str = "-n -1 draws them all"
) -> tuple[dict[str, Any], list[str]]:
    """The Vega-Lite spec of ``options`` over ``data``, and notes for the reader (rows left out).
    Raises ChartError for a column the rows don't have or one that can't be drawn as asked."""
    options.check()
    x = options.x if options.x is not None else _default_x(data)
    ys = list(options.y) or _default_ys(data, x, options.agg)[: 1 if options.kind == "pie" else None]
    for name in [x, *ys]:
        if name not in data.names:
            raise ChartError(f"the result has no column {name!r}; its columns are {', '.join(data.names)}")
    for name in ys:
        column = data.names.index(name)
        if data.types[column] != "quantitative" and options.agg != "count":
            raise ChartError(
                f"-y {name} is not a number ({data.type_names[column]}); name a numeric column, "
                "or count its rows with --agg count"
            )
    if not ys and options.agg != "count":
        raise ChartError(
            f"the result has no numeric column to draw besides {x!r}; name one with -y, "
            "or count rows with --agg count"
        )
    drawn = data.rows[:MAX_CHART_ROWS]
    notes = _row_notes(len(drawn), len(data.rows), data.total if data.total_known else None, all_rows_hint)
    x_type = data.types[data.names.index(x)]
    spec: dict[str, Any] = {
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"values": _values(data, [x, *ys], drawn)},
        "mark": {"type": _MARKS[options.kind], "tooltip": True},
        "width": _HEIGHT if options.kind == "pie" else _WIDTH,
        "height": _HEIGHT,
    }
    if options.kind == "line" and len(drawn) <= 100:
        spec["mark"]["point"] = True  # a few points: show where they are
    aggregate = _VEGA_AGGREGATE[options.agg] if options.agg else None
    if options.kind == "pie":
        spec["encoding"] = _pie_encoding(x, ys[0] if ys else None, aggregate, options.agg)
    else:
        spec.update(_xy_encoding(options.kind, x, x_type, ys, aggregate, options.agg, spec["data"]["values"]))
    if notes:
        spec["title"] = {
            "text": "; ".join(notes),
            "orient": "bottom",
            "anchor": "start",
            "fontSize": 11,
            "fontWeight": "normal",
            "color": "gray",
        }
    return spec, notes


def chart_bundle(data: Rows, options: ChartOptions, all_rows_hint: str = "-n -1 draws them all") -> Result:
    """The chart as a displayable value: Vega-Lite, a PNG of it (with vl-convert), and a text summary."""
    from dli_kernel.kernel.display import Result  # IPython's display machinery only once a chart is drawn

    spec, notes = build_spec(data, options, all_rows_hint)
    encoding = spec["encoding"]
    y_title = (encoding.get("y") or encoding.get("theta") or {}).get("title", "")
    x_title = (encoding.get("x") or encoding.get("color") or {}).get("title", "")
    drawn = len(spec["data"]["values"])
    summary = [f"{options.kind} chart of {y_title} by {x_title} ({drawn} row{'s' if drawn != 1 else ''})"]
    summary += notes
    bundle: dict[str, Any] = {VEGA_LITE_MIME: spec}
    png, why_not = render_png(spec)
    if png is not None:
        bundle["image/png"] = base64.b64encode(png).decode("ascii")
    else:
        summary.append(why_not)
    bundle["text/plain"] = "\n".join(summary)
    return Result(bundle)


def render_png(spec: dict[str, Any]) -> tuple[bytes | None, str]:
    """The spec drawn as PNG by vl-convert, or None and a sentence saying why there is none."""
    try:
        import vl_convert  # the charts extra; without it the chart still shows where Vega-Lite renders
    except ImportError:
        return None, (
            f"no PNG copy of this chart for nbconvert or GitHub: {CHARTS_EXTRA} in the kernel's environment"
        )
    try:
        # No base URL is allowed: the data is inline, so the renderer never reaches out.
        png = vl_convert.vegalite_to_png(spec, scale=1.0, allowed_base_urls=[])
    except Exception as err:  # a renderer failure costs the copy, never the chart
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, f"no PNG copy of this chart: vl-convert failed ({first})"
    return smaller_png(png), ""


def smaller_png(png: bytes) -> bytes:
    """The same image with its pixels deflated harder: vl-convert compresses for speed, and a saved
    notebook carries every byte (a plain bar chart's PNG gets about 8 times smaller, in milliseconds)."""
    try:
        chunks, position = [], 8
        while position < len(png):
            (size,) = struct.unpack(">I", png[position : position + 4])
            chunks.append((png[position + 4 : position + 8], png[position + 8 : position + 8 + size]))
            position += 12 + size
        pixels = zlib.compress(zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT")), 9)
    except (struct.error, zlib.error):
        return png  # not laid out as expected: leave it as it is
    out, written = [png[:8]], False
    for kind, data in chunks:
        if kind == b"IDAT":
            if written:
                continue  # the one new IDAT chunk holds all the pixels
            data, written = pixels, True
        out.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
    smaller = b"".join(out)
    return smaller if len(smaller) < len(png) else png


def frame_chart(
    frame: Any,
    kind: str = "bar",
    x: str | None = None,
    y: str | list[str] | tuple[str, ...] | None = None,
    agg: str | None = None,
) -> Result:
    """``dli_kernel.chart``: a pandas DataFrame drawn as ``%%sql --chart`` draws a result."""
    if not hasattr(frame, "columns") or not hasattr(frame, "itertuples"):
        raise TypeError(f"chart() draws a pandas DataFrame (got {type(frame).__name__})")
    ys = (y,) if isinstance(y, str) else tuple(y or ())
    return chart_bundle(frame_rows(frame), ChartOptions(kind=kind, x=x, y=ys, agg=agg), "")


# -- pieces of the spec ------------------------------------------------------------------------------


def _field(name: str) -> str:
    """A column name as a Vega-Lite field reference: dots and brackets would otherwise mean nesting."""
    return "".join("\\" + char if char in ".[]\\" else char for char in name)


def _default_x(data: Rows) -> str:
    if not data.names:
        raise ChartError("the result has no columns to draw")
    labels = [name for name, kind in zip(data.names, data.types, strict=True) if kind != "quantitative"]
    return labels[0] if labels else data.names[0]


def _default_ys(data: Rows, x: str, agg: str | None) -> list[str]:
    if agg == "count":
        return []  # rows are counted: no column is needed
    numbers = [n for n, kind in zip(data.names, data.types, strict=True) if kind == "quantitative" and n != x]
    return numbers


def _row_notes(drawn: int, held: int, total: int | None, all_rows_hint: str) -> list[str]:
    """``total``: the query's rows, None when the rows past the limit were not counted."""
    of = "" if total is None else f" of {max(total, held)}"
    if held > drawn:
        return [
            f"the chart shows the first {drawn}{of} rows (a chart draws at most "
            f"{MAX_CHART_ROWS}; aggregate in SQL to draw them all)"
        ]
    if total is None or total > held:
        hint = f"; {all_rows_hint}" if all_rows_hint else ""
        return [f"the chart shows the first {drawn}{of} rows (the row limit cut the result{hint})"]
    return []


def _values(data: Rows, columns: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    """The rows as Vega-Lite's inline records, only the columns drawn, each value as its type reads it."""
    picked = []
    for name in dict.fromkeys(columns):
        index = data.names.index(name)
        picked.append((name, index, data.types[index]))
    return [{name: _value(row[index], kind) for name, index, kind in picked} for row in rows]


def _value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "quantitative":
        try:
            number = float(value)  # decimals come as exact strings or Decimal
        except (TypeError, ValueError):
            return None
        if not math.isfinite(number):
            return None
        return int(number) if isinstance(value, int) and not isinstance(value, bool) else number
    if kind == "temporal":
        if hasattr(value, "isoformat"):
            return None if str(value) == "NaT" else value.isoformat()
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _free_name(taken: list[str], wanted: str) -> str:
    name = wanted
    while name in taken:
        name = f"_{name}"
    return name


def _xy_encoding(
    kind: str,
    x: str,
    x_type: str,
    ys: list[str],
    aggregate: str | None,
    agg: str | None,
    values: list[dict[str, Any]],
) -> dict[str, Any]:
    # Bars stand on categories: a number or a date under a bar is a label, and bars side by side need one.
    discrete = x_type == "nominal" or kind == "bar"
    x_channel: dict[str, Any] = {"field": _field(x), "type": "ordinal" if discrete else x_type, "title": x}
    if discrete:
        x_channel["sort"] = None  # the query's ORDER BY, not the alphabet
        labels = {str(row.get(x)) for row in values}
        if len(labels) <= 12 and max(map(len, labels), default=0) <= 12:
            x_channel["axis"] = {"labelAngle": 0}  # a few short labels read best upright
    if len(ys) <= 1:
        y_name = ys[0] if ys else ""
        y_channel: dict[str, Any] = {"type": "quantitative", "title": _title(y_name, agg)}
        if aggregate != "count":
            y_channel["field"] = _field(y_name)
        if aggregate:
            y_channel["aggregate"] = aggregate
        return {"encoding": {"x": x_channel, "y": y_channel}}
    series, value = _free_name([x, *ys], "series"), _free_name([x, *ys], "value")
    y_channel = {"field": value, "type": "quantitative", "title": ", ".join(_title(y, agg) for y in ys)}
    if aggregate:
        y_channel["aggregate"] = aggregate
    encoding: dict[str, Any] = {
        "x": x_channel,
        "y": y_channel,
        "color": {"field": series, "type": "nominal", "title": None, "sort": ys},
    }
    if kind == "bar":
        encoding["xOffset"] = {"field": series, "sort": ys}  # bars side by side, not stacked
    return {"transform": [{"fold": [_field(y) for y in ys], "as": [series, value]}], "encoding": encoding}


def _pie_encoding(x: str, y: str | None, aggregate: str | None, agg: str | None) -> dict[str, Any]:
    theta: dict[str, Any] = {"type": "quantitative", "stack": True, "title": _title(y or "", agg)}
    if aggregate != "count":
        theta["field"] = _field(y or "")
    if aggregate:
        theta["aggregate"] = aggregate
    return {"theta": theta, "color": {"field": _field(x), "type": "nominal", "title": x, "sort": None}}


def _title(y: str, agg: str | None) -> str:
    if agg == "count":
        return "count"
    return f"{agg}({y})" if agg else y
