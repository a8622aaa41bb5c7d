"""Reading a magic's arguments: argparse that answers a mistake with one ``UsageError`` line, and the
value types the magics' options take."""

from __future__ import annotations

import argparse
import keyword
import shlex
from typing import NoReturn

from IPython.core.error import UsageError

from dli_kernel.spec import MIN_HEARTBEAT_TIMEOUT_S, SpecError, parse_memory, parse_number


class HelpShown(Exception):
    """``--help`` printed its text: the magic has nothing more to do."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one UsageError line instead of exiting the process."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message.rstrip('.')} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(f"{self.prog}: {(message or '').strip()}")
        raise HelpShown


def split(line: str, prog: str) -> list[str]:
    """The words of ``line`` as a shell splits them; an unclosed quote is a UsageError."""
    try:
        return shlex.split(line)
    except ValueError as err:
        raise UsageError(f"{prog}: {err} in {line!r}") from None


def parse(parser: Parser, line: str) -> argparse.Namespace | None:
    """The arguments in ``line``, or None when ``--help`` was asked for (and shown)."""
    try:
        return parser.parse_args(split(line, parser.prog))
    except HelpShown:
        return None


def no_arguments(prog: str, line: str) -> None:
    if line.strip():
        raise UsageError(f"{prog} takes no arguments (got {line.strip()!r})")


# -- value types ------------------------------------------------------------------------------------


def memory(value: str) -> int:
    try:
        return parse_memory(value, "memory")
    except SpecError as err:
        raise argparse.ArgumentTypeError(str(err).replace("memory ", "", 1)) from None


def positive(value: str) -> int:
    number = parse_number(value)
    if number is None or number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {value!r})")
    return number


def non_negative(value: str) -> int:
    number = parse_number(value)
    if number is None:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds, 0 or more (got {value!r})")
    return number


def heartbeat(value: str) -> int:
    """A heartbeat timeout the kernel keeps up with: refused here, before any session is replaced."""
    number = non_negative(value)
    if 0 < number < MIN_HEARTBEAT_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"must be 0 (off) or at least {MIN_HEARTBEAT_TIMEOUT_S} seconds, as the kernel beats every 30 s "
            f"and a shorter timeout ends its idle session (got {value!r})"
        )
    return number


def conf(value: str) -> tuple[str, str]:
    key, sep, item = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"must be key=value (got {value!r})")
    return key.strip(), item


def csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def max_rows(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -2
    if number < -1:
        raise argparse.ArgumentTypeError(f"must be a row count, or -1 for all rows (got {value!r})")
    return number


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction above 0 and at most 1 (got {value!r})")
    return number


def identifier(value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise argparse.ArgumentTypeError(f"must be a Python variable name (got {value!r})")
    return value
