"""The sessions client: sessions and statements on Livy, DLI, Tencent Cloud DLC or the embedded server."""

from dli_kernel.client.dialects import DIALECTS, Dialect, make_dialect
from dli_kernel.client.errors import (
    BadRequest,
    ClientError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    MissingDependency,
    NotFound,
    RequestRejected,
    ServerError,
    StatementFailed,
    StatementTimeout,
    TlsFailed,
    Unauthorized,
)
from dli_kernel.client.models import LogPage, SessionInfo, StatementInfo, normalize_state
from dli_kernel.client.results import DataFrameResult
from dli_kernel.client.sessions_client import SessionsClient

__all__ = [
    "DIALECTS",
    "BadRequest",
    "ClientError",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "DataFrameResult",
    "Dialect",
    "LogPage",
    "MissingDependency",
    "NotFound",
    "RequestRejected",
    "ServerError",
    "SessionInfo",
    "SessionsClient",
    "StatementFailed",
    "StatementInfo",
    "StatementTimeout",
    "TlsFailed",
    "Unauthorized",
    "make_dialect",
    "normalize_state",
]
