"""Unit tests for dli_kernel.server.serve: what it refuses before it starts anything, and where its token
comes from (no Spark, no driver)."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dli_kernel.server import serve as serve_module
from dli_kernel.server.serve import ServerConfigError, _write_private, is_loopback, serve


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
