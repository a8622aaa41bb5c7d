"""SQL cell text split into its statements: ``;`` ends one, except inside quotes, backticks and comments."""

from __future__ import annotations

from collections.abc import Iterator


def split_sql(text: str) -> list[str]:
    """Statements separated by ``;``, ignoring those inside quotes, backticks and comments."""
    statements: list[list[tuple[str, str]]] = [[]]
    for kind, piece in _sql_pieces(text):
        if kind == "separator":
            statements.append([])
        else:
            statements[-1].append((kind, piece))
    # A piece holding only blanks and comments (e.g. after a final ``;``) is no statement.
    return [
        "".join(piece for _, piece in pieces).strip()
        for pieces in statements
        if "".join(piece for kind, piece in pieces if kind == "code").strip()
    ]


def _sql_pieces(text: str) -> Iterator[tuple[str, str]]:
    """SQL as ("code" | "comment" | "separator", text) pieces; a quoted string is one code piece."""
    i = 0
    while i < len(text):
        if text.startswith("--", i):
            end = text.find("\n", i)
            end, kind = (len(text) if end < 0 else end), "comment"
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end, kind = (len(text) if end < 0 else end + 2), "comment"
        elif text[i] in "'\"`":
            end, kind = _quote_end(text, i), "code"
        else:
            end, kind = i + 1, "separator" if text[i] == ";" else "code"
        yield kind, text[i:end]
        i = end


def _quote_end(text: str, start: int) -> int:
    """Where the quote opened at ``start`` ends; a backslash escapes in strings, not in `names`."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)
