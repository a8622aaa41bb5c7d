"""What can go wrong talking to a sessions API; ``str(err)`` is one sentence a user can act on."""

from __future__ import annotations

import ssl

from dli_kernel.protocol import CA_BUNDLE_ENV


class ClientError(Exception):
    """Base of every error the sessions client raises."""


class ConfigError(ClientError, ValueError):
    """The client is configured wrongly; the message names the setting and what is accepted."""


class ConnectionFailed(ClientError):
    """The server could not be reached, or did not answer in time."""


class TlsFailed(ClientError):
    """No TLS connection could be made: the server's certificate was not trusted, or the two sides do not
    both speak TLS. Never retried (another try meets the same certificate), and nothing was sent."""


def tls_failed(what: str, err: BaseException) -> TlsFailed:
    """The error for a failed TLS handshake (``requests``' SSLError) on the request ``what``."""
    return TlsFailed(f"{what}: {_tls_problem(err)}")


def _tls_problem(err: BaseException) -> str:
    """What went wrong in the TLS handshake, and what to do about it."""
    cause = _find_cause(err, ssl.SSLCertVerificationError)
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = (cause.verify_message or cause.reason or "no reason given").rstrip(".")
        if cause.verify_code in _NAME_MISMATCH:
            return (
                f"the server's certificate is not valid for this host name ({reason}): use a name or "
                "address that the certificate lists."
            )
        return (
            f"the server's certificate could not be verified ({reason}): set {CA_BUNDLE_ENV} "
            "(or ca_bundle in dli_kernel.json) to the file of the CA that signed it."
        )
    other = _find_cause(err, ssl.SSLError)
    reason = getattr(other, "reason", None) or type(other or err).__name__
    return (
        f"no TLS connection could be made ({reason}); is it a TLS server (https://, else http://), and "
        "does it accept this client's TLS versions?"
    )


_NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def _find_cause(err: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The ``kind`` exception among what ``err`` wraps (requests and urllib3 wrap it in ``args`` and
    ``reason``), or None."""
    todo: list[object] = [err]
    seen: set[int] = set()
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return item
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return None


class ServerError(ClientError):
    """The server answered 5xx."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def with_note(err: ClientError, note: str) -> ClientError:
    """``err`` of the same kind (and status, code) with ``note``, a sentence about what was done, after it."""
    message = f"{err} {note}"
    if isinstance(err, ServerError):
        return ServerError(message, err.status)
    if isinstance(err, RequestRejected):
        return type(err)(message, err.status, err.code)
    try:
        return type(err)(message)
    except TypeError:  # a subclass with arguments of its own: the note matters more than the kind
        return ConnectionFailed(message)


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
