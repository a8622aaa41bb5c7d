"""The sessions client: sessions and statements on Livy, DLI or the embedded server."""

from dli_kernel.client.dialects import DIALECTS, Dialect, make_dialect
from dli_kernel.client.errors import (
    BadRequest,
    ClientError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    NotFound,
    RequestRejected,
    ServerError,
    Unauthorized,
)
from dli_kernel.client.models import LogPage, SessionInfo, StatementInfo, normalize_state
from dli_kernel.client.sessions_client import SessionsClient

__all__ = [
    "DIALECTS",
    "BadRequest",
    "ClientError",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "Dialect",
    "LogPage",
    "NotFound",
    "RequestRejected",
    "ServerError",
    "SessionInfo",
    "SessionsClient",
    "StatementInfo",
    "Unauthorized",
    "make_dialect",
    "normalize_state",
]
