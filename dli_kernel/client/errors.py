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
    """The server refused the request (4xx, or a DLC error answer: then ``code`` is DLC's error code)."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


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


# Tencent Cloud error codes (``Response.Error.Code``, HTTP 200) by their first part, as the HTTP status
# each one stands for; an unlisted code is a plain RequestRejected.
_DLC_STATUSES = {
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
    "ResourceNotFound": 404,
    "InvalidParameter": 400,
    "InvalidParameterValue": 400,
    "MissingParameter": 400,
    "UnknownParameter": 400,
    "UnsupportedOperation": 400,
    "InvalidAction": 400,
    "FailedOperation": 409,
    "ResourceUnavailable": 409,
    "ResourceInUse": 409,
    "OperationDenied": 409,
    "InternalError": 500,
}


def dlc_error(code: str, message: str) -> ClientError:
    """The error for a DLC error answer: ``message`` is one sentence already, naming the action."""
    status = _DLC_STATUSES.get(code.split(".", 1)[0], 400)
    if status >= 500:
        return ServerError(message, status)
    kind = rejection_for(status) if code.split(".", 1)[0] in _DLC_STATUSES else RequestRejected
    return kind(message, status, code)


class MissingDependency(ClientError, ImportError):
    """An optional package this feature needs is not installed; the message says which and how."""


class StatementFailed(ClientError):
    """A statement the client ran for itself (a DataFrame fetch) ended in an error or was cancelled."""

    def __init__(self, message: str, output: dict | None = None) -> None:
        super().__init__(message)
        self.output = output


class StatementTimeout(ClientError):
    """A statement did not finish within the time the caller gave it."""
