"""Statement outputs too large to hold: written to a file in the session's directory, a stub kept instead.

A statement's output is held in memory for as long as its session is listed, and saved with the
statement's record in SQLite. One print of a big DataFrame made that hundreds of megabytes of both, so an
output whose JSON is larger than the server's ``output_spill_bytes`` goes to
``<workdir>/outputs/<statement id>.json`` when the statement finishes, written piece by piece, and the
statement keeps a ``SpilledOutput``: a stub (status, execution count, error name, a preview of the text)
that knows the file. Readers that can stream (``output_http``) splice the file into the statement's JSON,
so Livy clients still get the whole output; anything else sees the stub.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dli_kernel.server.answers import JSONAnswer

OUTPUTS_DIR = "outputs"
DEFAULT_SPILL_BYTES = 1024 * 1024
PREVIEW_CHARS = 4000  # of text/plain, and of an error's evalue, in the stub
_PIECE = 256 * 1024  # characters of a long string encoded at once: bounds the copies writing makes
_LEVELS = 3  # of dicts taken apart in writing: the output, its data and a MIME type's value


class SpilledOutput(dict[str, Any]):
    """The stub of an output whose whole JSON is the file at ``path`` (``size`` bytes, UTF-8)."""

    def __init__(self, stub: dict[str, Any], path: Path, size: int) -> None:
        super().__init__(stub)
        self.path = path
        self.size = size

    def __reduce__(self) -> Any:
        # copy and pickle would otherwise call __init__ without the file
        return (SpilledOutput, (dict(self), self.path, self.size))


def output_path(workdir: Path, statement_id: int) -> Path:
    return workdir / OUTPUTS_DIR / f"{int(statement_id)}.json"


def keep(output: dict[str, Any] | None, path: Path, threshold: int | None) -> dict[str, Any] | None:
    """What a statement keeps of ``output``: the output itself when its JSON is at most ``threshold``
    bytes (or there is no threshold), else a ``SpilledOutput`` whose file at ``path`` holds all of it.

    Raises OSError when the file cannot be written; nothing is left at ``path`` then.
    """
    if output is None or threshold is None or isinstance(output, SpilledOutput):
        return output
    pieces = _encode(output)
    head: list[bytes] = []
    size = 0
    for piece in pieces:
        head.append(piece)
        size += len(piece)
        if size > threshold:
            break
    else:
        return output
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as file:
            file.writelines(head)
            head.clear()
            for piece in pieces:
                file.write(piece)
                size += len(piece)
        # A reader never sees half a file: the name appears once the file is whole.
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return SpilledOutput(_stub(output, size), path, size)


def load(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """The whole output, read back from its file when it was spilled (the stub if the file is gone).

    For readers that need the data itself (DLC's SQL results): it is in memory while they use it."""
    if not isinstance(output, SpilledOutput):
        return output
    try:
        with output.path.open("rb") as file:
            whole = json.load(file)
    except (OSError, ValueError):
        return dict(output)
    return whole if isinstance(whole, dict) else dict(output)


def _stub(output: dict[str, Any], size: int) -> dict[str, Any]:
    note = (
        f"\n[output truncated: the whole output is {size:,} bytes of JSON; "
        "GET this statement's /output path for all of it]"
    )
    stub: dict[str, Any] = {key: output[key] for key in ("status", "execution_count") if key in output}
    if output.get("status") == "error":
        stub["ename"] = _short(output.get("ename"))
        stub["evalue"] = _short(output.get("evalue")) + note
        stub["traceback"] = []
    data = output.get("data")
    text = data.get("text/plain") if isinstance(data, dict) else None
    if output.get("status") != "error" or data is not None:
        stub["data"] = {"text/plain": _short(text) + note}
    return stub


def _short(value: object) -> str:
    text = value if isinstance(value, str) else ""
    return text[:PREVIEW_CHARS]


def _dumps(value: object) -> bytes:
    """``value``'s JSON as the routes send it (``JSONAnswer``), so a spliced body reads like the rest.

    A lone surrogate cannot be UTF-8; inside a JSON string (the only place text goes) backslashreplace
    writes it as the JSON escape \\udXXX, which decoders read back as the same character. What strict
    JSON cannot say (NaN, other types, nesting deeper than the encoder goes) is written as the routes
    write it."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return bytes(JSONAnswer(value).body)
    return text.encode("utf-8", "backslashreplace")


def _encode(value: object, depth: int = 0) -> Iterator[bytes]:
    """``value``'s JSON in pieces: a long string (the usual large output, printed text) never becomes one
    copy of itself, nor its JSON one bytes object. Only the output's own levels (output, data, a MIME
    type's value; the Jupyter outputs, each output, its data) are taken apart; anything else (a SQL
    result's rows) is encoded whole, as its pieces would be many and small."""
    if isinstance(value, dict) and depth < _LEVELS:
        yield b"{"
        for index, (key, item) in enumerate(value.items()):
            yield (b"," if index else b"") + _dumps(key if isinstance(key, str) else str(key)) + b":"
            yield from _encode(item, depth + 1)
        yield b"}"
    elif isinstance(value, list) and depth < _LEVELS:
        # The Jupyter outputs: each output a level as deep as its list, so that their data's MIME types are
        # taken apart as Livy's data's are. Only a dict keeps the depth: a list in a list is encoded whole,
        # or a value nested a thousand lists deep would recurse here without end.
        yield b"["
        for index, item in enumerate(value):
            if index:
                yield b","
            yield from _encode(item, depth if isinstance(item, dict) else _LEVELS)
        yield b"]"
    elif isinstance(value, str) and len(value) > _PIECE:
        yield b'"'
        for start in range(0, len(value), _PIECE):
            yield _dumps(value[start : start + _PIECE])[1:-1]
        yield b'"'
    else:
        yield _dumps(value)
