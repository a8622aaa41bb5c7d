"""The server's TC3-HMAC-SHA256 verifier against Tencent's own signer (tencentcloud-sdk-python): the SDK
builds and signs real requests, and the verifier must compute the very same signature and accept them;
any change to what was signed must be refused with Tencent's error code."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.datastructures import Headers

from dli_kernel.server import tc3

pytest.importorskip("tencentcloud.dlc.v20210125.dlc_client")
from tencentcloud.common.credential import Credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.dlc.v20210125.dlc_client import DlcClient

KEY = "the-server-token-as-secret-key"
SECRET_ID = "AKIDalice"
ENDPOINT = "127.0.0.1:8998"


def sdk_request(
    params: dict[str, Any], key: str = KEY, endpoint: str = ENDPOINT, action: str = "DescribeNotebookSession"
) -> RequestInternal:
    """A request exactly as DlcClient sends it: headers, body and TC3 signature made by the SDK."""
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint))
    client = DlcClient(Credential(SECRET_ID, key), "ap-guangzhou", profile)
    request = RequestInternal(endpoint, "POST", "/", header={})
    client._build_req_inter(action, params, request)
    return request


def body(request: RequestInternal) -> bytes:
    data = request.data
    return data.encode("utf-8") if isinstance(data, str) else data


def verify(request: RequestInternal, now: float | None = None, key: str = KEY, **changed: str) -> str:
    headers = Headers({**request.header, **changed})
    now = time.time() if now is None else now
    return tc3.verify(key, "POST", "/", "", headers, body(request), now).secret_id


PARAMS = [
    {"SessionId": "d3018ad4-9a7e-4f64-a3f4-f38507c69742"},
    {},
    {
        "Name": "nb-1",
        "Kind": "pyspark",
        "Arguments": [{"Key": "spark.x", "Value": "1"}],
        "ExecutorNumbers": 2,
    },
    {"Code": "print('héllo, 世界')\nspark.range(3).show()", "SessionId": "s"},
]


@pytest.mark.parametrize("params", PARAMS, ids=range(len(PARAMS)))
@pytest.mark.parametrize("endpoint", [ENDPOINT, "localhost:1", "dlc.tencentcloudapi.com"])
def test_the_signature_is_the_sdks_byte_for_byte(params: dict[str, Any], endpoint: str) -> None:
    request = sdk_request(params, endpoint=endpoint)
    auth = tc3.parse_authorization(request.header["Authorization"])
    headers = {name.lower(): value for name, value in request.header.items()}
    ours = tc3.signature(
        KEY,
        "POST",
        "/",
        "",
        headers,
        auth.signed_headers,
        body(request),
        request.header["X-TC-Timestamp"],
        auth.date,
    )
    assert ours == auth.signature
    assert (auth.secret_id, auth.service, auth.signed_headers) == (SECRET_ID, "dlc", ("content-type", "host"))
    assert verify(request) == SECRET_ID


@pytest.mark.parametrize("key", ["k", "a much longer secret key with spaces and ü", "0" * 64])
def test_any_secret_key_signs_alike(key: str) -> None:
    assert verify(sdk_request(PARAMS[0], key=key), key=key) == SECRET_ID


def refused(request: RequestInternal, code: str, now: float | None = None, **changed: str) -> str:
    with pytest.raises(tc3.SignatureError) as caught:
        verify(request, now, **changed)
    assert caught.value.code == code
    message = str(caught.value)
    assert KEY not in message and "\n" not in message and message.endswith(".")
    return message


def test_a_changed_body_is_refused() -> None:
    request = sdk_request(PARAMS[0])
    request.data = request.data.replace("d3018ad4", "e3018ad4")
    assert "does not match" in refused(request, "AuthFailure.SignatureFailure")


def test_another_key_is_refused() -> None:
    request = sdk_request(PARAMS[0], key="not the token")
    refused(request, "AuthFailure.SignatureFailure")


def test_another_host_is_refused() -> None:
    refused(sdk_request(PARAMS[0]), "AuthFailure.SignatureFailure", Host="127.0.0.1:9999")


def test_a_missing_signature_says_how_to_sign() -> None:
    request = sdk_request(PARAMS[0])
    del request.header["Authorization"]
    assert "not signed" in refused(request, "AuthFailure.SignatureFailure")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer token",
        "TC3-HMAC-SHA256 Credential=a/2024-01-01/dlc/tc3_request",
        "TC3-HMAC-SHA256 Credential=a/2024-01-01/dlc/other, SignedHeaders=content-type;host, Signature=ab",
        "TC3-HMAC-SHA256 Credential=a/2024-01-01/dlc/tc3_request, SignedHeaders=host, Signature=ab",
    ],
)
def test_a_malformed_authorization_is_refused(authorization: str) -> None:
    refused(sdk_request(PARAMS[0]), "AuthFailure.InvalidAuthorization", Authorization=authorization)


@pytest.mark.parametrize("skew", [-301, 301, 86400])
def test_a_stale_or_future_timestamp_is_refused(skew: int) -> None:
    request = sdk_request(PARAMS[0])
    now = int(request.header["X-TC-Timestamp"]) + skew
    assert "300 seconds" in refused(request, "AuthFailure.SignatureExpire", now=now)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_a_timestamp_within_five_minutes_is_taken(skew: int) -> None:
    request = sdk_request(PARAMS[0])
    assert verify(request, now=int(request.header["X-TC-Timestamp"]) + skew) == SECRET_ID


def test_a_bad_timestamp_is_refused() -> None:
    refused(sdk_request(PARAMS[0]), "AuthFailure.SignatureFailure", **{"X-TC-Timestamp": "yesterday"})


def test_a_credential_date_not_of_the_timestamp_is_refused() -> None:
    request = sdk_request(PARAMS[0])
    auth = request.header["Authorization"].replace("/dlc/", "/cvm/")
    assert "service 'cvm'" in refused(request, "AuthFailure.SignatureFailure", Authorization=auth)
    date = tc3.parse_authorization(request.header["Authorization"]).date
    auth = request.header["Authorization"].replace(date, "1999-01-01")
    assert "UTC date" in refused(request, "AuthFailure.SignatureFailure", Authorization=auth)


def test_an_unsigned_payload_is_refused() -> None:
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=ENDPOINT))
    profile.unsignedPayload = True
    client = DlcClient(Credential(SECRET_ID, KEY), "ap-guangzhou", profile)
    request = RequestInternal(ENDPOINT, "POST", "/", header={})
    client._build_req_inter("DescribeNotebookSession", PARAMS[0], request)
    assert "unsignedPayload" in refused(request, "AuthFailure.SignatureFailure")


def test_more_signed_headers_are_verified_as_tencents_guide_says() -> None:
    """Other SDKs (Go's) sign X-TC-Action too, its value in lower case."""
    request = sdk_request(PARAMS[0])
    timestamp = request.header["X-TC-Timestamp"]
    date = tc3.parse_authorization(request.header["Authorization"]).date
    signed = ("content-type", "host", "x-tc-action")
    headers = {name.lower(): value for name, value in request.header.items()}
    sig = tc3.signature(KEY, "POST", "/", "", headers, signed, body(request), timestamp, date)
    scope = f"Credential=x/{date}/dlc/tc3_request"
    auth = f"TC3-HMAC-SHA256 {scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    assert verify(request, Authorization=auth) == "x"
    refused(
        request,
        "AuthFailure.SignatureFailure",
        Authorization=auth,
        **{"X-TC-Action": "DeleteNotebookSession"},
    )


@pytest.mark.parametrize("timestamp", ["\u00b2", "\u00b9\u00b3", "9" * 400, "9" * 5000, "-1", "1e9"])
def test_a_timestamp_not_of_ascii_digits_is_refused_in_one_short_sentence(timestamp: str) -> None:
    message = refused(sdk_request(PARAMS[0]), "AuthFailure.SignatureFailure", **{"X-TC-Timestamp": timestamp})
    assert "X-TC-Timestamp" in message and len(message) < 300
