"""What can go wrong talking to a sessions API; ``str(err)`` is one sentence a user can act on."""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the sessions client raises."""


class ConfigError(ClientError, ValueError):
    """The client is configured wrongly; the message names the setting and what is accepted."""


class ConnectionFailed(ClientError):
    """The server could not be reached, or did not answer in time."""


class ServerError(ClientError):
    """The server answered 5xx."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RequestRejected(ClientError):
    """The server refused the request (4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BadRequest(RequestRejected):
    """400: the request was invalid; the server's message says why."""


class Unauthorized(RequestRejected):
    """401/403: missing or wrong credentials."""


class NotFound(RequestRejected):
    """404: the session or statement does not exist (any more: it may have expired)."""


class Conflict(RequestRejected):
    """409: the session exists but cannot take the request (it ended, or failed to start)."""


def rejection_for(status: int) -> type[RequestRejected]:
    return {400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict}.get(
        status, RequestRejected
    )


class MissingDependency(ClientError, ImportError):
    """An optional package this feature needs is not installed; the message says which and how."""


class StatementFailed(ClientError):
    """A statement the client ran for itself (a DataFrame fetch) ended in an error or was cancelled."""

    def __init__(self, message: str, output: dict | None = None) -> None:
        super().__init__(message)
        self.output = output


class StatementTimeout(ClientError):
    """A statement did not finish within the time the caller gave it."""
