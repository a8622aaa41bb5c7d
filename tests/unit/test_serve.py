"""Unit tests for dli_kernel.server.serve: what it refuses before it starts anything, and where its token
comes from (no Spark, no driver)."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dli_kernel.server import serve as serve_module
from dli_kernel.server.serve import ServerConfigError, _write_private, default_pool, is_loopback, serve
from dli_kernel.server.settings import ServerSettings
from dli_kernel.server.users import User, hash_token, new_token, write_users


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.20", False),
        ("example.com", False),
        ("my-laptop.local", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


class Served:
    """What a server made by ``serve()`` showed while it ran: it runs in process, through its lifespan."""

    def __init__(self) -> None:
        self.server_file: dict = {}
        self.file_mode = 0
        self.status: dict[str, int] = {}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Served:
    """Make ``serve()`` run its app in process instead of on its socket, and note what it showed."""
    served = Served()

    def run(server: serve_module._Server, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.close()
        with TestClient(server._app) as client:  # runs the lifespan: start, server.json, stop
            path = tmp_path / "state" / "server.json"
            served.server_file, served.file_mode = json.loads(path.read_text()), mode(path)
            token = served.server_file["token"]
            for name, headers in (
                ("right", {"Authorization": f"Bearer {token}"}),
                ("wrong", {"Authorization": f"Bearer {token}x"}),
                ("none", {}),
            ):
                served.status[name] = client.get("/sessions", headers=headers).status_code

    monkeypatch.setattr(serve_module._Server, "run", run)
    return served


def test_serve_takes_its_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("DLI_KERNEL_SERVER_TOKEN", "token-from-the-environment")
    serve(tmp_path / "state", host="127.0.0.1", port=0, announce=False, pool=0)
    assert served.server_file["token"] == "token-from-the-environment"
    assert served.file_mode == 0o600
    assert served.status == {"right": 200, "wrong": 401, "none": 401}
    assert not (tmp_path / "state" / "server.json").exists()  # removed when the server stopped


def test_serve_makes_a_token_when_the_environment_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    tokens = []
    for _ in range(2):
        serve(tmp_path / "state", host="127.0.0.1", port=0, announce=False, pool=0)
        assert served.status == {"right": 200, "wrong": 401, "none": 401}
        tokens.append(served.server_file["token"])
    assert len(tokens[0]) >= 32 and tokens[0] != tokens[1]  # a fresh secret each time


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.com"])
def test_serve_refuses_a_public_address_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    state_dir = tmp_path / "state"
    with pytest.raises(ServerConfigError) as info:
        serve(state_dir, host=host, port=0, announce=False)
    message = str(info.value)
    assert "DLI_KERNEL_SERVER_TOKEN" in message
    assert host in message
    assert "not a loopback address" in message
    # It refused before doing anything: not even the state directory exists.
    assert not state_dir.exists()


def test_serve_treats_an_empty_token_as_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLI_KERNEL_SERVER_TOKEN", "")
    state_dir = tmp_path / "state"
    with pytest.raises(ServerConfigError, match="DLI_KERNEL_SERVER_TOKEN"):
        serve(state_dir, host="0.0.0.0", port=0, announce=False)
    assert not state_dir.exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """Every socket made while the test runs; any left open is closed afterwards, so none leaks."""
    made: list[socket.socket] = []

    class Tracked(socket.socket):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(socket, "socket", Tracked)
    yield made
    for sock in made:
        sock.close()


def test_serve_says_when_it_cannot_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int, sockets: list[socket.socket]
) -> None:
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    state_dir = tmp_path / "state"
    with pytest.raises(ServerConfigError) as info:
        serve(state_dir, host="127.0.0.1", port=taken_port, announce=False)
    message = str(info.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{taken_port}: ")
    assert message.endswith(".")
    assert "in use" in message.lower()
    assert len(sockets) == 1  # it tried once, and did not fall back to another port
    # Nothing was started: no sessions database, no server file.
    assert sorted(p.name for p in state_dir.iterdir()) == []


def test_serve_closes_its_socket_when_it_cannot_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int, sockets: list[socket.socket]
) -> None:
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    with pytest.raises(ServerConfigError):
        serve(tmp_path / "state", host="127.0.0.1", port=taken_port, announce=False)
    assert [sock.fileno() for sock in sockets] == [-1]


# -- _write_private ---------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_creates_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    _write_private(path, '{"token": "secret"}')
    assert path.read_text() == '{"token": "secret"}'
    assert mode(path) == 0o600


def test_write_private_ignores_a_lax_umask(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    old = os.umask(0)
    try:
        _write_private(path, "x")
    finally:
        os.umask(old)
    assert mode(path) == 0o600


def test_write_private_tightens_and_truncates_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text("an older and much longer content that must not survive")
    path.chmod(0o644)
    assert mode(path) == 0o644
    _write_private(path, "new")
    assert path.read_text() == "new"
    assert mode(path) == 0o600


# -- a server a team shares: users, TLS, limits, the pool by master -----------------------------------

LONG_TOKEN = "x" * 32


def run_in_process(monkeypatch: pytest.MonkeyPatch, check: Callable[[TestClient], None]) -> None:
    """Make ``serve()`` run its app in process, through its lifespan, and call ``check`` while it runs."""

    def run(server: serve_module._Server, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.close()
        with TestClient(server._app) as client:
            check(client)

    monkeypatch.setattr(serve_module._Server, "run", run)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def team_file(tmp_path: Path) -> tuple[Path, str]:
    token = new_token()
    path = tmp_path / "users.json"
    write_users(path, [User("alice", hash_token(token))])
    return path, token


def test_a_users_file_adds_its_users_to_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, team_file: tuple[Path, str]
) -> None:
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    users_file, alice = team_file
    state_dir = tmp_path / "state"
    seen: dict[str, int] = {}

    def check(client: TestClient) -> None:
        operator = json.loads((state_dir / "server.json").read_text())["token"]
        for name, token in (("alice", alice), ("operator", operator), ("wrong", alice + "x")):
            seen[name] = client.get("/sessions", headers=bearer(token)).status_code

    run_in_process(monkeypatch, check)
    serve(state_dir, port=0, announce=False, pool=0, users_file=users_file)
    assert seen == {"alice": 200, "operator": 200, "wrong": 401}
    assert mode(state_dir / "dlc-secret") == 0o600  # what users' DLC keys derive from


def test_a_bad_users_file_is_refused_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text('{"users": [}')
    users_file.chmod(0o600)
    state_dir = tmp_path / "state"
    for path in (users_file, tmp_path / "missing.json"):
        with pytest.raises(ServerConfigError) as info:
            serve(state_dir, port=0, announce=False, pool=0, users_file=path)
        assert str(path) in str(info.value)
    assert not state_dir.exists()


def test_a_short_token_is_refused_beyond_loopback_even_with_a_users_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, team_file: tuple[Path, str]
) -> None:
    monkeypatch.setenv("DLI_KERNEL_SERVER_TOKEN", "x" * 31)
    state_dir = tmp_path / "state"
    for users_file in (None, team_file[0]):
        with pytest.raises(ServerConfigError) as info:
            serve(state_dir, host="0.0.0.0", port=0, announce=False, pool=0, users_file=users_file)
        assert "DLI_KERNEL_SERVER_TOKEN of 31 characters: use at least 32" in str(info.value)
    assert not state_dir.exists()


def test_a_short_token_is_fine_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("DLI_KERNEL_SERVER_TOKEN", "short")
    serve(tmp_path / "state", host="127.0.0.1", port=0, announce=False, pool=0)
    assert served.status == {"right": 200, "wrong": 401, "none": 401}


@pytest.mark.parametrize("token", ["", LONG_TOKEN])
def test_beyond_loopback_without_tls_is_served_with_a_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    team_file: tuple[Path, str],
    token: str,
) -> None:
    """A users file is enough beyond loopback (the operator's token is then a fresh random one)."""
    monkeypatch.setenv("DLI_KERNEL_SERVER_TOKEN", token)
    served: list[int] = []
    run_in_process(monkeypatch, lambda client: served.append(client.get("/version").status_code))
    with caplog.at_level(logging.WARNING, "dli_kernel.server"):
        serve(tmp_path / "state", host="0.0.0.0", port=0, announce=False, pool=0, users_file=team_file[0])
    assert served == [401]  # it ran, and still wants a token
    assert "beyond loopback, without TLS" in caplog.text
    assert "--certfile" in caplog.text


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def test_tls_makes_the_url_https(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path], capsys: Any
) -> None:
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    cert, key = certificate
    state_dir = tmp_path / "state"
    urls: list[str] = []
    run_in_process(
        monkeypatch, lambda client: urls.append(json.loads((state_dir / "server.json").read_text())["url"])
    )
    serve(state_dir, port=0, pool=0, certfile=cert, keyfile=key)
    assert urls[0].startswith("https://127.0.0.1:")
    assert f"listening on {urls[0]} " in capsys.readouterr().out


def test_bad_tls_files_are_refused_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    other_key = tmp_path / "other.pem"
    other_key.write_text(key.read_text().replace("PRIVATE KEY", "PRIVATE KEX"))
    state_dir = tmp_path / "state"
    for certfile, keyfile, expected in (
        (None, key, "--keyfile needs --certfile"),
        (tmp_path / "none.pem", key, f"--certfile: there is no file at {tmp_path / 'none.pem'}."),
        (cert, tmp_path / "none.pem", "--keyfile: there is no file at"),
        (cert, None, f"{cert} is not a PEM certificate and the private key that goes with it"),
        (key, cert, "are not a PEM certificate and the private key that goes with it"),
        (cert, other_key, "are not a PEM certificate"),
    ):
        with pytest.raises(ServerConfigError) as info:
            serve(state_dir, port=0, announce=False, pool=0, certfile=certfile, keyfile=keyfile)
        assert expected in str(info.value)
    assert not state_dir.exists()


class _Stop(Exception):
    pass


@pytest.fixture
def settings_made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ServerSettings serve() gives its manager; serve() stops right there."""
    made: list[Any] = []

    def manager(settings: Any, store: Any) -> None:
        store.close()
        made.append(settings)
        raise _Stop

    monkeypatch.setattr(serve_module, "SessionManager", manager)
    return made


@pytest.mark.parametrize(
    ("master", "pool", "expected"),
    [
        ("local[*]", None, 1),
        ("local", None, 1),
        ("local[2]", None, 1),
        ("spark://127.0.0.1:7077", None, 0),
        ("yarn", None, 0),
        ("k8s://https://10.0.0.1:6443", None, 0),
        ("local-cluster[2,1,1024]", None, 0),
        ("spark://127.0.0.1:7077", 2, 2),
        ("local[*]", 0, 0),
    ],
)
def test_the_warm_pool_defaults_to_one_on_a_local_master_and_none_on_a_cluster(
    tmp_path: Path, settings_made: list[Any], master: str, pool: int | None, expected: int
) -> None:
    assert default_pool(master) == (1 if master.startswith("local[") or master == "local" else 0)
    with pytest.raises(_Stop):
        serve(tmp_path / "state", port=0, announce=False, master=master, pool=pool)
    assert settings_made[0].pool_size == expected
    assert settings_made[0].master == master


def test_limits_and_the_driver_host_reach_the_settings(tmp_path: Path, settings_made: list[Any]) -> None:
    with pytest.raises(_Stop):
        serve(
            tmp_path / "state",
            port=0,
            announce=False,
            pool=0,
            driver_host="10.1.2.3",
            max_sessions_per_user=2,
            max_starting=3,
            max_driver_memory_mb=65536,
            max_body=1000,
            max_statement_body=2000,
        )
    settings = settings_made[0]
    assert (settings.driver_host, settings.max_sessions_per_user, settings.max_starting) == ("10.1.2.3", 2, 3)
    assert (settings.max_driver_memory_mb, settings.max_body, settings.max_statement_body) == (
        65536,
        1000,
        2000,
    )
    with pytest.raises(_Stop):
        serve(tmp_path / "state", port=0, announce=False, pool=0)
    defaults = ServerSettings(state_dir=tmp_path / "state")
    assert settings_made[1] == defaults  # options not given leave the settings' defaults
