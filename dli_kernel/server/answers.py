"""The JSON answers of every route: Starlette's ``JSONResponse``, but one that renders whatever the server
holds. Input is checked (``json_body``), but records stored before the checks, and outputs a driver sent,
may hold a lone surrogate, NaN or data nested deeper than the encoder goes: such an answer is written in
ASCII with ``\\u`` escapes (valid JSON, which every client reads back as the text it was), non-finite
numbers as null and what is nested too deep as a short string, never as a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

SHOWN_DEPTH = 100  # deeper parts of a stored value are replaced; the encoder itself recurses
TOO_DEEP = "(nested too deep to show)"


class JSONAnswer(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
            return json.dumps(
                _shown(content, 0), ensure_ascii=True, separators=(",", ":"), default=str
            ).encode("ascii")


def _shown(value: Any, depth: int) -> Any:
    """``value`` with what JSON cannot carry replaced."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not isinstance(value, dict | list | tuple):
        return value
    if depth >= SHOWN_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else str(key): _shown(item, depth + 1) for key, item in value.items()
        }
    return [_shown(item, depth + 1) for item in value]
