"""Unit tests for dli_kernel.client.auth.

Real ``requests`` prepared requests, a real local HTTP server (pytest-httpserver), and AK/SK signatures
compared with the ones huaweicloudsdkcore's own ``Signer`` makes for the same requests (the SDK is in the
``test`` extra; those tests skip when it is missing, and a golden vector taken from it always runs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request as WsgiRequest
from werkzeug import Response as WsgiResponse

from dli_kernel.client.auth import BearerToken, HuaweiAkSk, IamToken

try:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
except ImportError:  # the SDK is only in the test extra
    BasicCredentials = None
    SdkRequest = None

needs_sdk = pytest.mark.skipif(
    BasicCredentials is None,
    reason="huaweicloudsdkcore is not installed (it is in the 'test' extra: pip install -e '.[test]'), "
    "so signatures cannot be compared with the SDK's Signer",
)

AK = "AKIDEXAMPLE1234"
SK = "s3cr3t-SK-value-9876"
TOKEN = "tok-VERY-secret-0042"
SECURITY_TOKEN = "sts-SECURITY-token-777"
PROJECT = "0123456789abcdef"
FIXED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "20240102T030405Z"
BASE = "https://dli.cn-north-4.myhuaweicloud.com"
SECRETS = (SK, TOKEN, SECURITY_TOKEN)


def fixed_clock() -> datetime:
    return FIXED


def signer(project_id: str | None = PROJECT, security_token: str | None = None) -> HuaweiAkSk:
    return HuaweiAkSk(AK, SK, project_id=project_id, security_token=security_token, now=fixed_clock)


def prepare(method: str, url: str, **kwargs: Any) -> requests.PreparedRequest:
    return requests.Request(method, url, **kwargs).prepare()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --- tokens -------------------------------------------------------------------------------------------------


def test_bearer_token_sets_authorization() -> None:
    r = BearerToken(TOKEN)(prepare("GET", "http://127.0.0.1:8998/sessions"))
    assert r.headers["Authorization"] == f"Bearer {TOKEN}"


def test_iam_token_sets_x_auth_token() -> None:
    r = IamToken(TOKEN)(prepare("GET", f"{BASE}/v2.0/{PROJECT}/sessions"))
    assert r.headers["X-Auth-Token"] == TOKEN
    assert "Authorization" not in r.headers


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (BearerToken(TOKEN), "BearerToken(token=***)"),
        (IamToken(TOKEN), "IamToken(token=***)"),
        (
            HuaweiAkSk(AK, SK, PROJECT, SECURITY_TOKEN),
            f"HuaweiAkSk(ak='AKID…', sk=***, project_id='{PROJECT}', security_token=***)",
        ),
        (HuaweiAkSk(AK, SK), "HuaweiAkSk(ak='AKID…', sk=***, project_id=None, security_token=None)"),
    ],
)
def test_repr_and_str_hide_secrets(auth: object, expected: str) -> None:
    assert repr(auth) == expected
    assert str(auth) == expected
    for shown in (repr(auth), str(auth), f"{auth!r} {auth}"):
        assert_no_secret(shown)
        assert AK not in shown  # only a short prefix of the access key id (an id, not a secret)
    assert_no_secret(repr(vars(auth)))  # the stored secrets show as *** too (debuggers, tracebacks)


@pytest.mark.parametrize(
    ("make", "missing"),
    [
        (lambda: BearerToken(""), "token"),
        (lambda: IamToken(""), "token"),
        (lambda: HuaweiAkSk("", SK, PROJECT, SECURITY_TOKEN), "ak"),
        (lambda: HuaweiAkSk(AK, "", PROJECT, SECURITY_TOKEN), "sk"),
        (lambda: HuaweiAkSk(AK, SK, "", SECURITY_TOKEN), "project_id"),
        (lambda: HuaweiAkSk(AK, SK, PROJECT, ""), "security_token"),
    ],
)
def test_empty_values_raise_value_error_naming_them(make: Any, missing: str) -> None:
    with pytest.raises(ValueError, match=rf"needs a non-empty {missing}\b") as info:
        make()
    assert_no_secret(str(info.value))
    assert str(info.value).count(".") == 1  # one sentence


@pytest.mark.parametrize("bad", [f"{SK} ", f"{SK}\n", f"{SK}é", f"{SK}\x00"])
def test_unsendable_secrets_are_refused_without_echoing_them(bad: str) -> None:
    for make in (BearerToken, IamToken, lambda value: HuaweiAkSk(AK, value)):
        with pytest.raises(ValueError, match="printable ASCII") as info:
            make(bad)
        assert SK not in str(info.value)


def test_non_str_secret_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="needs token as a str, not bytes"):
        BearerToken(TOKEN.encode())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"needs sk \(secret access key\) as a str, not NoneType"):
        HuaweiAkSk(AK, None)  # type: ignore[arg-type]


# --- AK/SK: what it adds to the request ---------------------------------------------------------------------


def test_aksk_adds_date_host_project_and_security_token() -> None:
    r = signer(security_token=SECURITY_TOKEN)(prepare("GET", f"{BASE}/v2.0/{PROJECT}/sessions"))
    assert r.headers["X-Sdk-Date"] == STAMP
    assert r.headers["Host"] == "dli.cn-north-4.myhuaweicloud.com"
    assert r.headers["X-Project-Id"] == PROJECT
    assert r.headers["X-Security-Token"] == SECURITY_TOKEN
    assert re.fullmatch(
        r"SDK-HMAC-SHA256 Access=AKIDEXAMPLE1234, "
        r"SignedHeaders=host;x-project-id;x-sdk-date;x-security-token, Signature=[0-9a-f]{64}",
        r.headers["Authorization"],
    )


def test_aksk_without_project_or_security_token_adds_neither() -> None:
    r = signer(project_id=None)(prepare("GET", "http://127.0.0.1:8998/sessions"))
    assert "X-Project-Id" not in r.headers
    assert "X-Security-Token" not in r.headers
    assert r.headers["Host"] == "127.0.0.1:8998"
    assert "SignedHeaders=host;x-sdk-date," in r.headers["Authorization"]


@pytest.mark.parametrize(
    "moment",
    [
        FIXED,
        FIXED.replace(tzinfo=None),  # naive: taken as UTC
        FIXED.astimezone(timezone(timedelta(hours=8))),  # Beijing time: converted to UTC
    ],
)
def test_clock_is_injectable_and_stamped_in_utc(moment: datetime) -> None:
    r = HuaweiAkSk(AK, SK, now=lambda: moment)(prepare("GET", f"{BASE}/"))
    assert r.headers["X-Sdk-Date"] == STAMP


def test_default_clock_is_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    r = HuaweiAkSk(AK, SK)(prepare("GET", f"{BASE}/"))
    stamped = datetime.strptime(r.headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamped <= datetime.now(UTC)


def test_query_is_sent_in_the_canonical_form_it_is_signed_in() -> None:
    r = signer()(prepare("GET", f"{BASE}/v2.0/p/sessions", params=[("b", "x y+z"), ("a", "2"), ("a", "1")]))
    assert urlsplit(r.url).query == "a=1&a=2&b=x%20y%2Bz"


def test_trailing_slash_does_not_change_the_signature() -> None:
    # The SDK always appends "/" to the canonical URI, so /sessions and /sessions/ sign alike.
    plain = signer()(prepare("GET", f"{BASE}/v2.0/p/sessions"))
    slash = signer()(prepare("GET", f"{BASE}/v2.0/p/sessions/"))
    assert plain.headers["Authorization"] == slash.headers["Authorization"]
    assert urlsplit(slash.url).path == "/v2.0/p/sessions/"  # the path itself is sent as given


def test_str_body_is_sent_as_utf8() -> None:
    text = json.dumps({"name": "会话"}, ensure_ascii=False)
    r = signer()(prepare("POST", f"{BASE}/x", data=text, headers={"Content-Type": "application/json"}))
    assert r.body == text.encode("utf-8")
    assert r.headers["Content-Length"] == str(len(text.encode("utf-8")))


def test_non_json_content_type_is_unsigned_payload() -> None:
    r = signer()(prepare("PUT", f"{BASE}/x", data=b"raw", headers={"Content-Type": "text/plain"}))
    assert r.headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert "x-sdk-content-sha256" in r.headers["Authorization"]


def test_signing_twice_gives_the_same_request() -> None:
    auth = signer(security_token=SECURITY_TOKEN)
    r = auth(prepare("POST", f"{BASE}/x?q=a b", json={"k": 1}, headers={"X-Lang": "中文"}))
    first = (r.url, dict(r.headers), r.body)
    auth(r)
    assert (r.url, dict(r.headers), r.body) == first
    assert "authorization" not in r.headers["Authorization"].split("SignedHeaders=")[1]
    assert r.hooks["response"].count(auth._on_response) == 1


def test_hop_by_hop_and_underscore_headers_are_not_signed() -> None:
    headers = {"Connection": "keep-alive", "X_Under": "1", "X-Requested-By": "dli"}
    r = signer(project_id=None)(prepare("POST", f"{BASE}/x", data=b"{}", headers=headers))
    signed = r.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert signed == "host;x-requested-by;x-sdk-date"


def test_golden_vector_from_the_sdk() -> None:
    # Made once by huaweicloudsdkcore 3.1.219's Signer for the same request, so it holds without the SDK.
    body = json.dumps({"kind": "pyspark", "name": "会话"}, ensure_ascii=False).encode("utf-8")
    r = signer()(
        prepare(
            "POST",
            f"{BASE}/v2.0/{PROJECT}/sessions?x=1",
            data=body,
            headers={"Content-Type": "application/json"},
        )
    )
    assert r.headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AKIDEXAMPLE1234, SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=9e7d5d26a6374b28aba14e059955ddf778e806e943965e18fd9fbe29f710c8b5"
    )


def _stream() -> Iterator[bytes]:
    yield b"{}"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": _stream(), "headers": {"Content-Type": "application/json"}}, TypeError),
        ({"url": f"{BASE}/x?q=%FF"}, ValueError),
        ({"headers": {"X-Bad": b"\xff\xfe"}}, ValueError),
    ],
)
def test_errors_raised_while_signing_carry_no_secret(kwargs: dict[str, Any], error: type[Exception]) -> None:
    kwargs.setdefault("url", f"{BASE}/x")
    r = prepare("POST", **kwargs)
    with pytest.raises(error) as info:
        signer(security_token=SECURITY_TOKEN)(r)
    for shown in (str(info.value), repr(info.value), repr(info.value.args)):
        assert_no_secret(shown)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# --- AK/SK: the same signatures as the SDK ------------------------------------------------------------------


@dataclass
class Case:
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    data: str | bytes | None = None
    project_id: str | None = PROJECT
    security_token: str | None = None
    base: str = BASE


NON_ASCII_JSON = json.dumps({"name": "会话-é", "conf": {"spark.app.name": "ünïcode ✓"}}, ensure_ascii=False)
JSON = {"Content-Type": "application/json"}

CASES = {
    "get-no-query": Case("GET", f"/v2.0/{PROJECT}/sessions"),
    "get-trailing-slash-query": Case("GET", f"/v2.0/{PROJECT}/sessions/", [("limit", "10"), ("offset", "0")]),
    "get-special-and-repeated-query": Case(
        "GET",
        f"/v2.0/{PROJECT}/sessions",
        [("name", "a b+c/d?&=é~*'!"), ("tag", "x"), ("tag", "a"), ("empty", ""), ("A", "upper"), ("é", "1")],
    ),
    "post-json-non-ascii-bytes": Case(
        "POST", f"/v2.0/{PROJECT}/sessions", headers=JSON, data=NON_ASCII_JSON.encode("utf-8")
    ),
    "post-json-non-ascii-str": Case("POST", f"/v2.0/{PROJECT}/sessions", headers=JSON, data=NON_ASCII_JSON),
    "post-empty-body": Case(
        "POST", f"/v2.0/{PROJECT}/sessions/42/statements/7/cancel", headers=JSON, data=b""
    ),
    "delete-no-body": Case("DELETE", f"/v2.0/{PROJECT}/sessions/abc-123"),
    "patch-lowercase-method": Case("patch", f"/v2.0/{PROJECT}/sessions/1", headers=JSON, data=b'{"a": 1}'),
    "extra-headers-and-security-token": Case(
        "POST",
        f"/v2.0/{PROJECT}/sessions/1/statements",
        [("wait", "5")],
        headers={
            **JSON,
            "X-Requested-By": "dli-kernel",
            "X-Padded": "spaced value  ",
            "X-Lang": "中文",
            "X_Under": "not signed",
            "User-Agent": "dli-kernel/0.1",
        },
        data=b'{"code": "print(1)"}',
        security_token=SECURITY_TOKEN,
    ),
    "no-project-id": Case("GET", "/sessions", [("from", "0"), ("size", "20")], project_id=None),
    "text-body-unsigned-payload": Case(
        "PUT", f"/v2.0/{PROJECT}/resources/x", headers={"Content-Type": "text/plain"}, data="héllo"
    ),
    "octet-stream": Case(
        "POST", "/upload", headers={"Content-Type": "application/octet-stream"}, data=b"\x00\x01\xff"
    ),
    "special-path": Case("GET", "/v2.0/p/jobs/a b/ü/x~y(1)!/%2Fslash/"),
    "ipv6-port": Case("GET", "/sessions/1/log", [("from", "0")], base="http://[::1]:8998"),
}


def sdk_sign(case: Case, prepared: requests.PreparedRequest) -> Any:
    """Sign the same request with the SDK's Signer, built from the case's own inputs."""
    url = urlsplit(prepared.url)
    headers = dict(case.headers)
    if case.data is not None and "Content-Type" in prepared.headers:
        headers["Content-Type"] = prepared.headers["Content-Type"]
    headers["X-Sdk-Date"] = STAMP  # the SDK keeps a date already present: that is how to pin its clock
    request = SdkRequest(
        method=prepared.method,
        schema=url.scheme,
        host=url.netloc,
        resource_path=url.path,
        query_params=list(case.params),
        header_params=headers,
        body=prepared.body,
    )
    credentials = BasicCredentials(AK, SK, case.project_id)
    if case.security_token is not None:
        credentials = credentials.with_security_token(case.security_token)
    return credentials.sign_request(request)


def wire(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


@needs_sdk
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_signature_matches_the_sdk(case: Case) -> None:
    prepared = prepare(
        case.method, case.base + case.path, params=case.params, headers=case.headers, data=case.data
    )
    expected = sdk_sign(case, prepared.copy())
    signed = HuaweiAkSk(AK, SK, case.project_id, case.security_token, now=fixed_clock)(prepared)

    assert signed.headers["Authorization"] == expected.header_params["Authorization"]
    url = urlsplit(signed.url)
    assert url.path + (f"?{url.query}" if url.query else "") == expected.uri  # sent as the SDK sends it
    for name, value in expected.header_params.items():  # every header the SDK sends, we send alike
        assert wire(signed.headers[name]) == wire(value), name
    assert bytes(signed.body or b"") == (expected.body or b"")


# --- through a real HTTP server -----------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def capture(server: HTTPServer, path: str) -> list[Received]:
    got: list[Received] = []

    def handler(request: WsgiRequest) -> WsgiResponse:
        headers = {k.lower(): v.encode("latin-1").decode("utf-8") for k, v in request.headers.items()}
        got.append(Received(request.method, request.environ["RAW_URI"], headers, request.get_data()))
        return WsgiResponse("{}", content_type="application/json")

    server.expect_request(path).respond_with_handler(handler)
    return got


def verify_as_gateway(got: Received, sk: str) -> str:
    """Recompute the signature from what arrived, the way the gateway does; return the Access id."""
    match = re.fullmatch(
        r"SDK-HMAC-SHA256 Access=(\S+), SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        got.headers["authorization"],
    )
    assert match, got.headers["authorization"]
    access, signed, signature = match.groups()
    path, _, query = got.target.partition("?")
    uri = "/".join(quote(segment, safe="~") for segment in unquote(path).split("/"))
    uri = uri if uri.endswith("/") else uri + "/"
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)
    names = signed.split(";")
    canonical_headers = "".join(f"{name}:{got.headers[name].strip()}\n" for name in names)
    payload = got.headers.get("x-sdk-content-sha256") if got.body else None
    payload = payload or hashlib.sha256(got.body).hexdigest()
    canonical = "\n".join([got.method, uri, canonical_query, canonical_headers, signed, payload])
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"SDK-HMAC-SHA256\n{got.headers['x-sdk-date']}\n{digest}"
    assert hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest() == signature

    if BasicCredentials is not None:  # and the SDK's Signer, given what arrived, agrees
        request = SdkRequest(
            method=got.method,
            schema="http",
            host=got.headers["host"],
            resource_path=path,
            query_params=parse_qsl(query, keep_blank_values=True),
            header_params={name: got.headers[name] for name in names},
            body=got.body,
        )
        BasicCredentials(access, sk).sign_request(request)
        assert request.header_params["Authorization"] == got.headers["authorization"]
    return access


def test_signed_request_verifies_at_a_real_server(httpserver: HTTPServer) -> None:
    got = capture(httpserver, f"/v2.0/{PROJECT}/sessions")
    body = {"kind": "pyspark", "name": "会话 ✓", "conf": {"spark.executor.memory": "2g"}}
    with requests.Session() as session:  # with the session's own default headers
        session.auth = HuaweiAkSk(AK, SK, PROJECT, SECURITY_TOKEN)  # real clock
        session.headers["X-Lang"] = "中文"
        response = session.post(
            httpserver.url_for(f"/v2.0/{PROJECT}/sessions"),
            params=[("b", "x y"), ("a", "2"), ("a", "é/1")],
            data=json.dumps(body, ensure_ascii=False),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=10,
        )
    assert response.status_code == 200
    [received] = got
    assert verify_as_gateway(received, SK) == AK
    assert received.headers["x-project-id"] == PROJECT
    assert received.headers["x-security-token"] == SECURITY_TOKEN
    assert received.headers["x-lang"] == "中文"
    assert received.headers["host"] == urlsplit(httpserver.url_for("/")).netloc
    assert json.loads(received.body) == body
    stamped = datetime.strptime(received.headers["x-sdk-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - stamped) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [(BearerToken(TOKEN), "authorization", f"Bearer {TOKEN}"), (IamToken(TOKEN), "x-auth-token", TOKEN)],
)
def test_tokens_arrive_at_a_real_server(
    httpserver: HTTPServer, auth: requests.auth.AuthBase, header: str, value: str
) -> None:
    got = capture(httpserver, "/sessions")
    assert requests.get(httpserver.url_for("/sessions"), auth=auth, timeout=10).status_code == 200
    assert got[0].headers[header] == value


@pytest.fixture
def other_origin() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)  # httpserver listens on "localhost": another origin
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.mark.parametrize(
    ("auth", "secret_header"),
    [(IamToken(TOKEN), "x-auth-token"), (signer(security_token=SECURITY_TOKEN), "x-security-token")],
)
def test_secrets_do_not_follow_a_redirect_to_another_origin(
    httpserver: HTTPServer, other_origin: HTTPServer, auth: requests.auth.AuthBase, secret_header: str
) -> None:
    got = capture(other_origin, "/elsewhere")
    target = other_origin.url_for("/elsewhere")
    httpserver.expect_request("/sessions").respond_with_response(
        WsgiResponse(status=307, headers={"Location": target})
    )
    assert requests.get(httpserver.url_for("/sessions"), auth=auth, timeout=10).status_code == 200
    [received] = got
    assert secret_header not in received.headers
    assert "authorization" not in received.headers
    assert received.headers["host"] == urlsplit(target).netloc  # not the stale signed Host


def test_iam_token_follows_a_redirect_within_the_origin(httpserver: HTTPServer) -> None:
    got = capture(httpserver, "/new")
    httpserver.expect_request("/old").respond_with_response(
        WsgiResponse(status=307, headers={"Location": "/new"})
    )
    assert requests.get(httpserver.url_for("/old"), auth=IamToken(TOKEN), timeout=10).status_code == 200
    assert got[0].headers["x-auth-token"] == TOKEN
