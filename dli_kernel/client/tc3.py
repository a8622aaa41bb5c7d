"""Tencent Cloud's ``TC3-HMAC-SHA256`` request signing, as a ``requests`` auth object, for the dlc dialect.

The key derivation and the signature are the SDK's own (``tencentcloud.common.sign.Sign.sign_tc3``), and the
credentials are the SDK's objects (``Credential``, or any of its providers' credentials with
``get_credential_info()``, so refreshed role credentials are read at each request). What is written here is
the canonical request the SDK's ``AbstractClient`` builds for a JSON POST (signed headers
``content-type;host``), because the SDK keeps that inside its own client, bound to its own HTTP layer;
tests/unit/test_dlc_client.py checks it byte for byte against the SDK's client. The SDK is imported only when
the dlc dialect is used: ``pip install 'dli-kernel[dlc]'``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest
from requests.auth import AuthBase

from dli_kernel.client.errors import ClientError, ConfigError, MissingDependency
from dli_kernel.protocol import DLC_PATH
from dli_kernel.protocol import DLC_SERVICE as SERVICE
from dli_kernel.protocol import DLC_SIGN_ALGORITHM as ALGORITHM

__all__ = ["SERVICE", "TencentTC3", "require_sdk", "tencent_credential"]

_INSTALL = "pip install 'dli-kernel[dlc]'"


def require_sdk() -> Any:
    """The SDK's ``Sign`` class; MissingDependency naming the extra when the SDK is not installed."""
    try:
        from tencentcloud.common.sign import Sign
    except ImportError:
        raise MissingDependency(
            "the dlc dialect signs requests with Tencent Cloud's SDK (tencentcloud-sdk-python-common), "
            f"which is not installed: {_INSTALL}."
        ) from None
    return Sign


def tencent_credential(secret_id: str, secret_key: str, token: str | None = None) -> Any:
    """The SDK's ``Credential``; its complaint about a key is re-raised without the key's value."""
    require_sdk()
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    try:
        return Credential(secret_id, secret_key, token)
    except TencentCloudSDKException:
        raise ConfigError(
            "the Tencent Cloud SecretId and SecretKey must be non-empty and without spaces "
            "(their values are not shown)."
        ) from None


class TencentTC3(AuthBase):
    """Signs each request with ``TC3-HMAC-SHA256`` for ``service`` and adds ``X-TC-Timestamp`` (and
    ``X-TC-Token`` with a temporary credential). The dialect sets ``X-TC-Action``, ``-Version`` and
    ``-Region``. Each call signs afresh, so a retried request carries a new timestamp.

    ``credential``: anything with ``get_credential_info() -> (secret_id, secret_key, token)``, as the SDK's
    credentials have. Its repr shows only the start of the SecretId, never the key or a token.
    """

    def __init__(
        self, credential: Any, service: str = SERVICE, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._sign = require_sdk().sign_tc3
        if not callable(getattr(credential, "get_credential_info", None)):
            raise TypeError("TencentTC3 needs a Tencent Cloud SDK credential (with get_credential_info()).")
        self._credential = credential
        self.service = service
        self._clock = clock

    def __repr__(self) -> str:
        return f"TencentTC3(secret_id={self._shown_id()!r}, secret_key=***, service={self.service!r})"

    __str__ = __repr__

    def identity(self) -> str | None:
        """The SecretId requests are signed with (not a secret: DLC shows it as a session's creator)."""
        try:
            secret_id = self._credential.get_credential_info()[0]
        except Exception:  # a credential chain that cannot answer now: identity unknown
            return None
        return str(secret_id) if secret_id else None

    def _shown_id(self) -> str:
        secret_id = getattr(self._credential, "secret_id", None) or getattr(self._credential, "secretId", "")
        return (str(secret_id)[:4] + "…") if secret_id else "?"

    def __call__(self, r: PreparedRequest) -> PreparedRequest:
        try:
            secret_id, secret_key, token = self._credential.get_credential_info()
        except Exception as err:  # a provider that fetches role credentials may fail in many ways
            raise ClientError(
                f"the Tencent Cloud credentials could not be read ({type(err).__name__})."
            ) from None
        timestamp = int(self._clock())
        host = urlsplit(r.url or "").netloc.rpartition("@")[2]
        body = r.body or b""
        if isinstance(body, str):
            body = r.body = body.encode("utf-8")
        if not isinstance(body, bytes):
            raise TypeError("TencentTC3 signs only a body given as str or bytes (a JSON document).")
        given = r.headers.get("Content-Type") or "application/json"
        content_type = given.decode("latin-1") if isinstance(given, bytes) else given
        r.headers["Content-Type"] = content_type
        r.headers["Host"] = host  # what is signed is what is sent
        r.headers["X-TC-Timestamp"] = str(timestamp)
        if token:
            r.headers["X-TC-Token"] = token
        else:
            r.headers.pop("X-TC-Token", None)
        r.headers["Authorization"] = self.authorization(
            secret_id, secret_key, r.method or "POST", host, content_type, body, timestamp
        )
        return r

    def authorization(
        self,
        secret_id: str,
        secret_key: str,
        method: str,
        host: str,
        content_type: str,
        body: bytes,
        timestamp: int,
        path: str = DLC_PATH,
    ) -> str:
        """The ``Authorization`` header for a request to ``path`` (the action API's is always DLC_PATH)."""
        canonical_request = "\n".join(
            [
                method.upper(),
                path,
                "",  # a POST's query string is empty
                f"content-type:{content_type}\nhost:{host}\n",
                "content-type;host",
                hashlib.sha256(body).hexdigest(),
            ]
        )
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        scope = f"{date}/{self.service}/tc3_request"
        string_to_sign = "\n".join(
            [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
        )
        signature = self._sign(secret_key, date, self.service, string_to_sign)
        return (
            f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders=content-type;host, "
            f"Signature={signature}"
        )
