"""Inputs no schema-driven generator makes, which the fuzz mixes into its cases: text that only looks like
an id, text that cannot be encoded where it ends up, and bodies that break parsers rather than checks."""

from __future__ import annotations

import json

# Text for any place a string goes. In a URL it is sent percent-encoded as UTF-8.
TEXT = (
    "测试",  # not Latin-1: breaks a header (Location) that repeats it
    "项",
    "²",  # passes str.isdigit(), not int()
    "٢",  # Arabic-Indic 2: int() reads it as 2
    "\uff11\uff12",  # fullwidth 12
    "00",
    " 1",
    "-1",
    "+1",
    "1_0",
    "1e3",
    "9" * 5000,  # int() refuses more than 4,300 digits
    "NaN",
    "inf",
    "\x00",
    "\u202e",  # right-to-left override
    "🙂",
    "a/b",
    "..",
    "%",
    "\\",
    "'\"",
    "\r\n",
)
# Only in a JSON body: a lone surrogate is no Unicode text and cannot be sent in a URL or header.
SURROGATES = ("\ud800", 'x = "\udfff"', "a\udc80b")


def unicode_digits(number: str) -> list[str]:
    """``number`` as other scripts write it, padded, or with a sign: each is no id here."""
    arabic = number.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    fullwidth = number.translate({ord("0") + d: 0xFF10 + d for d in range(10)})
    return [arabic, fullwidth, "0" + number, "+" + number, number + " ", number + "\u00b2"]


def raw_bodies(fields: list[str]) -> list[bytes]:
    """Whole bodies to send as application/json, for a route whose body has ``fields``."""
    bodies = [
        b"[" * 5000,  # nested deeper than Python's recursion limit
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b"1" + b"0" * 5000,
        b"-1e999999",
        b"NaN",
        b"\xff\xfe\x00",  # not UTF-8
        b'"\\ud800"',
        b"null",
        b"[]",
        b"{",
        b'{"a": 1, "a": 2}',
    ]
    for name in fields:
        bodies.append(json.dumps({name: "\ud800"}).encode())  # as "\ud800", an escape JSON allows
        bodies.append(b'{"' + name.encode() + b'": ' + b"7" * 5000 + b"}")  # no int() reads it
        bodies.append(json.dumps({name: [[[[[[[[[[]]]]]]]]]]}).encode())
    return bodies
