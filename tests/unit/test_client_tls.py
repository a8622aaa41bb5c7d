"""The sessions client against a real TLS server (a tiny one on 127.0.0.1, certificates from trustme):
it verifies certificates with the configured CA, and a failed handshake is one clear sentence, not retried.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dli_kernel.client import ClientError, SessionsClient
from dli_kernel.client.errors import TlsFailed

trustme = pytest.importorskip("trustme")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        body = json.dumps({"from": 0, "total": 0, "sessions": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    requests = 0

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes are what these tests make


@pytest.fixture
def ca(tmp_path: Path) -> tuple[object, Path]:
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def serving(certificate: object | None) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)  # type: ignore[attr-defined]
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def tls_server(ca: tuple[object, Path]) -> Iterator[_Server]:
    yield from serving(ca[0].issue_cert("127.0.0.1"))  # type: ignore[attr-defined]


@pytest.fixture
def misnamed_server(ca: tuple[object, Path]) -> Iterator[_Server]:
    yield from serving(ca[0].issue_cert("server.example.test"))  # type: ignore[attr-defined]


@pytest.fixture
def plain_server() -> Iterator[_Server]:
    yield from serving(None)


def url(server: _Server, scheme: str = "https") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


def client(server: _Server, verify: bool | str = True) -> SessionsClient:
    return SessionsClient(url(server), "livy", verify=verify, extensions=(), retry_delays=(0.01, 0.01))


def test_the_configured_ca_verifies_the_server(tls_server: _Server, ca: tuple[object, Path]) -> None:
    with client(tls_server, verify=str(ca[1])) as sessions:
        assert sessions.list_sessions() == []
    assert tls_server.requests == 1


def test_an_unknown_ca_is_one_sentence_that_names_the_variable_and_is_not_retried(
    tls_server: _Server,
) -> None:
    with client(tls_server) as sessions, pytest.raises(TlsFailed) as info:
        sessions.list_sessions()
    message = str(info.value)
    assert message.startswith(
        f"GET {url(tls_server)}/sessions: the server's certificate could not be verified"
    )
    assert "set DLI_KERNEL_CA_BUNDLE (or ca_bundle in dli_kernel.json) to the file of the CA" in message
    assert message.endswith(".") and "\n" not in message
    assert isinstance(info.value, ClientError)
    assert tls_server.requests == 0  # nothing was sent, and a GET was not tried again


def test_a_certificate_for_another_name_says_so(misnamed_server: _Server, ca: tuple[object, Path]) -> None:
    with client(misnamed_server, verify=str(ca[1])) as sessions, pytest.raises(TlsFailed) as info:
        sessions.list_sessions()
    assert "the server's certificate is not valid for this host name" in str(info.value)
    assert "use a name or address that the certificate lists." in str(info.value)


def test_https_to_a_plain_http_server_is_a_tls_failure(plain_server: _Server) -> None:
    with client(plain_server) as sessions, pytest.raises(TlsFailed) as info:
        sessions.list_sessions()
    assert "no TLS connection could be made" in str(info.value)
    assert "is it a TLS server (https://, else http://)" in str(info.value)
    with client(plain_server) as sessions:
        sessions.url = url(plain_server, "http")
        assert sessions.list_sessions() == []
