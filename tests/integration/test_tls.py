"""A real `dli-kernel server` with TLS (--certfile/--keyfile, a throwaway CA from trustme) and with a users
file (--users), reached over HTTP(S) on 127.0.0.1 by the sessions client as the kernel configures it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dli_kernel.cli import main
from dli_kernel.client import SessionsClient, Unauthorized
from dli_kernel.client.errors import TlsFailed
from dli_kernel.config import load_settings
from dli_kernel.spec import SessionSpec
from tests.integration.conftest import Server, wait_until

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca_and_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = (where / "ca.pem", where / "cert.pem", where / "key.pem")
    ca.cert_pem.write_to_path(str(paths[0]))
    issued.private_key_pem.write_to_path(str(paths[2]))
    with open(paths[1], "wb") as chain:
        for pem in issued.cert_chain_pems:
            chain.write(pem.bytes())
    return paths


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, ca_and_pair: tuple[Path, Path, Path]
) -> Iterator[Server]:
    ca, cert, key = ca_and_pair
    state_dir = tmp_path_factory.mktemp("tls-server") / "state"
    server = Server(state_dir, extra_args=("--certfile", str(cert), "--keyfile", str(key)))
    server.http.verify = str(ca)
    server.http.trust_env = False  # else requests lets REQUESTS_CA_BUNDLE override the session's verify
    try:
        yield server
        leaked = server.live_sessions()
        for session in leaked:
            server.delete(f"/sessions/{session['id']}")
    finally:
        server.stop()
    assert not leaked
    assert server.token not in server.stderr_path.read_text(errors="replace")


def configured_client(server: Server, ca: Path | None, tmp_path: Path) -> SessionsClient:
    """The client the kernel makes from its configuration (environment only; no config file)."""
    env = {"DLI_KERNEL_URL": server.url, "DLI_KERNEL_TOKEN": server.token, "DLI_KERNEL_DIALECT": "livy"}
    if ca is not None:
        env["DLI_KERNEL_CA_BUNDLE"] = str(ca)
    settings = load_settings(env=env, config_file=tmp_path / "no-config.json")
    assert settings.endpoint is not None
    return settings.endpoint.client(retry_delays=())


def test_the_server_serves_https_and_says_so(tls_server: Server) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    assert tls_server.url in tls_server.banner
    assert tls_server.get("/version").status_code == 200
    with pytest.raises(requests.exceptions.SSLError):  # the system's CAs do not know trustme's
        requests.get(f"{tls_server.url}/version", timeout=10, verify=True)


def test_the_kernel_s_client_verifies_with_the_ca_bundle(
    tls_server: Server, ca_and_pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    with configured_client(tls_server, ca_and_pair[0], tmp_path) as client:
        assert client.list_sessions() == []
        assert "wait" in client.server_extensions()


def test_without_the_ca_bundle_the_client_says_what_to_set(tls_server: Server, tmp_path: Path) -> None:
    with configured_client(tls_server, None, tmp_path) as client, pytest.raises(TlsFailed) as info:
        client.list_sessions()
    message = str(info.value)
    assert "the server's certificate could not be verified" in message
    assert "set DLI_KERNEL_CA_BUNDLE" in message
    assert tls_server.token not in message


def test_a_session_runs_over_tls(
    tls_server: Server, ca_and_pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    with configured_client(tls_server, ca_and_pair[0], tmp_path) as client:
        session = client.create_session(SessionSpec(kind="pyspark", name="over-tls"))
        try:
            wait_until(
                lambda: client.get_session(session.id, wait=5).state == "idle", "the session to be idle", 180
            )
            statement = client.submit(session.id, "spark.range(5).count()")
            output = client.wait_statement(session.id, statement.id, timeout=120).output or {}
            assert output["status"] == "ok", output
            assert output["data"]["text/plain"].strip() == "5"
        finally:
            client.delete_session(session.id)


# -- a users file ------------------------------------------------------------------------------------


def users_command(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["users", *argv]) == 0
    return out.getvalue().strip()


def status(server: Server, token: str, path: str = "/sessions") -> int:
    return requests.get(
        f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).status_code


def test_a_users_file_gives_each_user_their_own_token(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"
    alice = users_command("add", "alice", "--users", str(users_file))
    server = Server(tmp_path / "state", extra_args=("--users", str(users_file)))
    try:
        assert f"users from {users_file}" in server.banner
        assert status(server, alice) == 200
        assert status(server, server.token) == 200  # the operator's, in server.json
        assert status(server, alice + "x") == 401
        assert status(server, "") == 401
        with SessionsClient(server.url, "local", auth=_bearer(alice), retry_delays=()) as client:
            assert client.list_sessions() == []

        # Added and removed while it runs: no restart.
        bob = users_command("add", "bob", "--users", str(users_file))
        wait_until(lambda: status(server, bob) == 200, "bob's new token to work", timeout=30)
        users_command("remove", "alice", "--users", str(users_file))
        wait_until(lambda: status(server, alice) == 401, "alice's token to stop working", timeout=30)
        with (
            SessionsClient(server.url, "local", auth=_bearer(alice), retry_delays=()) as client,
            pytest.raises(Unauthorized),
        ):
            client.list_sessions()
        assert (tmp_path / "state" / "dlc-secret").stat().st_mode & 0o077 == 0
    finally:
        server.stop()
    logged = server.stderr_path.read_text(errors="replace")
    assert alice not in logged and bob not in logged and server.token not in logged


def _bearer(token: str) -> object:
    from dli_kernel.client.auth import BearerToken

    return BearerToken(token)
