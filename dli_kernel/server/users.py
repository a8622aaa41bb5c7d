"""Who may use the server: one token for one person (the default), or a users file for a team.

``Users.bearer`` maps the token of a request (``Authorization: Bearer`` or DLI's ``X-Auth-Token``) to
its :class:`Principal`, or None.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from dli_kernel.server.principal import Principal


class Users(Protocol):
    def bearer(self, token: str) -> Principal | None:
        """The user whose token this is, or None."""
        ...

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        """The SecretKey that a DLC request signed with this SecretId must be signed with, and who signs
        with it; None for a SecretId nobody has."""
        ...


class SingleToken:
    """The one-person server: its token opens everything, as the server's OS user, an admin."""

    def __init__(self, token: str, owner: str) -> None:
        self._token = token.encode()
        self._principal = Principal(owner, admin=True)

    def __repr__(self) -> str:
        return f"SingleToken(owner={self._principal.name!r})"

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        # One person's server: the token is the SecretKey, and the SecretId names who signs (the kernel
        # sends the OS user's name), so that DLC's creator field says who made a session.
        return self._token.decode(), Principal(secret_id, admin=True)

    def bearer(self, token: str) -> Principal | None:
        # Constant time: how long a refusal takes says nothing about how much of the token was right.
        if token and hmac.compare_digest(token.encode(), self._token):
            return self._principal
        return None
