"""Who sent a request: the user the server's auth found for its token or signature."""

from __future__ import annotations

import getpass
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """A user of the server. ``admin`` sees and touches every session; anyone else only their own."""

    name: str
    admin: bool = False
    max_sessions: int | None = None  # live sessions this user may hold; None: the server's default

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.name


def operator_name() -> str:
    """The server's OS user, whom the server's own token names (its operator, an admin)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return "operator"


def operator() -> Principal:
    return Principal(operator_name(), admin=True)
