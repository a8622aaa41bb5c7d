"""Reading a request's JSON body, for every route of every path family and DLC's actions alike: UTF-8
text, nested at most MAX_DEPTH levels, every string (and key) Unicode text. Anything else is refused with
``BodyError`` and one sentence, before the route looks at what the body asks for.

Callers run it in a worker thread: parsing a 10 MB body takes the CPU for a while, and the event loop
answers other requests meanwhile.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dli_kernel.spec import lone_surrogate, shown

MAX_DEPTH = 64  # no body here nests more than a few levels; Python's own parser gives up near 1000
# What a lone surrogate arrives as, once the body has been decoded as strict UTF-8: a \u escape of one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BodyError(ValueError):
    """A body that is no JSON this server reads; ``str()`` is the sentence the client sees."""


def _too_deep() -> BodyError:
    return BodyError(
        f"the request body is JSON nested more than {MAX_DEPTH} levels deep, more than any request here "
        "needs; send a flatter one."
    )


def load_json(raw: bytes) -> Any:
    """The body as JSON; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        # Strictly: json.loads(bytes) would also take UTF-16 and UTF-32, and surrogates encoded as bytes.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyError(
            f"the request body is not UTF-8 text (byte {err.start} is no UTF-8); send JSON in UTF-8."
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as err:
        raise BodyError(f"the request body is not valid JSON: {err}.") from None
    except ValueError:  # int() refuses a literal of more than sys.get_int_max_str_digits() digits
        raise BodyError(
            "the request body holds a number of thousands of digits, more than any field here takes; "
            "send a shorter one."
        ) from None
    # Both checks walk the parsed value; most bodies can have neither problem, which a scan in C shows.
    if text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        _check(value)
    return value


def _check(value: Any) -> None:
    """Refuse a value nested too deep or holding a lone surrogate; iterative, so any depth is safe."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            _text(item, path)
        elif isinstance(item, dict | list):
            if depth + 1 > MAX_DEPTH:
                raise _too_deep()
            if isinstance(item, dict):
                for key, child in item.items():
                    _text(key, path, key=True)
                    stack.append((child, depth + 1, (*path, key)))
            else:
                stack.extend((child, depth + 1, (*path, index)) for index, child in enumerate(item))


def _text(text: str, path: tuple[str | int, ...], key: bool = False) -> None:
    surrogate = lone_surrogate(text)
    if surrogate is None:
        return
    if key:
        where = f"a key of {_where(path)}" if path else "a top-level key"
    else:
        where = _where(path) if path else "the body itself"
    raise BodyError(
        f"the request body holds a lone UTF-16 surrogate ({surrogate}) in {where}, which is not valid "
        "Unicode text; send UTF-8 text."
    )


def _where(path: tuple[str | int, ...]) -> str:
    """Where in the body a value is: 'code', 'conf'['spark.x'], 'jars'[1]."""
    first, *rest = path
    shown_first = shown(first, 40) if isinstance(first, str) else f"[{first}]"
    return shown_first + "".join(f"[{shown(p, 40) if isinstance(p, str) else p}]" for p in rest)
