"""Unit tests for dli_kernel.server.users: the users file, its reloads, DLC keys and the token check.

No server process: the file is read and written in tmp_path, and the token check runs as the server's
middleware in front of a tiny Starlette app.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from dli_kernel.server import users as users_module
from dli_kernel.server.auth import TokenAuth
from dli_kernel.server.principal import Principal
from dli_kernel.server.users import (
    SingleToken,
    User,
    UsersFile,
    UsersFileError,
    derive_dlc_key,
    dlc_secret,
    hash_token,
    new_token,
    parse_users,
    read_users,
    write_users,
)

ALICE, BOB, OPERATOR = new_token(), new_token(), new_token()
SECRET = b"ab" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    write_users(path, [User("alice", hash_token(ALICE), max_sessions=2), User("bob", hash_token(BOB), True)])
    return path


def write_raw(path: Path, document: Any) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    path.chmod(0o600)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(UsersFileError) as info:
        UsersFile(path)
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message
    assert str(path) in message
    return message


# -- the file ---------------------------------------------------------------------------------------


def test_tokens_are_256_bit_and_only_their_hash_is_written(path: Path) -> None:
    assert len(ALICE) == 43 and ALICE != BOB
    text = path.read_text()
    assert ALICE not in text and BOB not in text
    assert hash_token(ALICE) in text
    assert mode(path) == 0o600
    assert json.loads(text) == {
        "users": [
            {"name": "alice", "token_sha256": hash_token(ALICE), "max_sessions": 2},
            {"name": "bob", "token_sha256": hash_token(BOB), "admin": True},
        ]
    }


def test_write_users_is_0600_whatever_the_umask_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "users.json"
    old = os.umask(0)
    try:
        write_users(path, [User("alice", hash_token(ALICE))])
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["users.json"]


def test_a_users_file_gives_principals(path: Path) -> None:
    users = UsersFile(path)
    assert users.bearer(ALICE) == Principal("alice", admin=False, max_sessions=2)
    assert users.bearer(BOB) == Principal("bob", admin=True, max_sessions=None)
    assert [user.name for user in users.users] == ["alice", "bob"]


@pytest.mark.parametrize("token", ["", "wrong", ALICE + "x", ALICE[:-1], hash_token(ALICE), OPERATOR])
def test_a_wrong_token_is_nobody(path: Path, token: str) -> None:
    assert UsersFile(path).bearer(token) is None


def test_an_empty_file_has_no_users(tmp_path: Path) -> None:
    assert UsersFile(write_raw(tmp_path / "users.json", "")).users == ()
    assert UsersFile(write_raw(tmp_path / "users.json", {"users": []})).users == ()


GOOD = {"name": "alice", "token_sha256": "a" * 64}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", "is not valid JSON: Expecting property name"),
        ([], '{"users": [...]}'),
        ({"users": {}}, '{"users": [...]}'),
        ({"users": [], "extra": 1}, '{"users": [...]}'),
        ({"users": ["alice"]}, "users[0] must be an object"),
        ({"users": [{**GOOD, "token": "x"}]}, "users[0] has unknown keys ['token']"),
        ({"users": [{**GOOD, "name": "a b"}]}, "name must be 1 to 64 of the characters"),
        ({"users": [{**GOOD, "name": "x" * 65}]}, "name must be 1 to 64"),
        ({"users": [{**GOOD, "name": ""}]}, "name must be 1 to 64"),
        ({"users": [{"token_sha256": "a" * 64}]}, "name must be"),
        ({"users": [{**GOOD, "token_sha256": "A" * 64}]}, "token_sha256 must be 64 lowercase hex digits"),
        ({"users": [{**GOOD, "token_sha256": "a" * 63}]}, "token_sha256 must be 64"),
        ({"users": [{"name": "alice"}]}, "token_sha256 must be 64"),
        ({"users": [{**GOOD, "admin": "yes"}]}, "admin must be true or false"),
        ({"users": [{**GOOD, "max_sessions": -1}]}, "max_sessions must be a whole number, 0 or more"),
        ({"users": [{**GOOD, "max_sessions": True}]}, "max_sessions must be a whole number"),
        ({"users": [{**GOOD, "max_sessions": 1.5}]}, "max_sessions must be a whole number"),
        ({"users": [GOOD, {**GOOD, "token_sha256": "b" * 64}]}, "names user 'alice' twice"),
        ({"users": [GOOD, {**GOOD, "name": "bob"}]}, "user 'bob' has the same token as another user"),
    ],
)
def test_a_bad_file_is_refused_in_one_sentence(tmp_path: Path, document: Any, expected: str) -> None:
    message = refusal(write_raw(tmp_path / "users.json", document))
    assert expected in message
    assert "a" * 63 not in message and "A" * 63 not in message  # a hash's value is never shown


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_bytes(b'{"users": [\xff]}')
    path.chmod(0o600)
    assert "is not UTF-8" in refusal(path)


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    assert f"dli-kernel users add NAME --users {path}" in refusal(path)
    assert read_users(path, missing_ok=True) == ()


@pytest.mark.parametrize("file_mode", [0o620, 0o602, 0o666])
def test_a_file_others_can_write_is_refused(path: Path, file_mode: int) -> None:
    path.chmod(file_mode)
    message = refusal(path)
    assert "can be written by other OS users" in message
    assert f"chmod 600 {path}" in message


def test_a_file_others_can_read_is_used_with_a_warning(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "dli_kernel.server"):
        assert UsersFile(path).bearer(ALICE) is not None
    assert "can be read by other OS users (mode 0644)" in caplog.text


def test_reprs_and_logs_never_hold_a_hash_or_a_token(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with caplog.at_level(logging.DEBUG, "dli_kernel.server"):
        users = UsersFile(path, operator=SingleToken(OPERATOR, "op"), clock=clock)
        users.bearer(ALICE)
        write_raw(path, {"users": [{"name": "alice", "token_sha256": "no"}]})
        clock.now += 2
        users.bearer(ALICE)
    shown = [repr(users), str(users), repr(users.users), repr(users.bearer(ALICE)), caplog.text]
    for secret in (ALICE, BOB, OPERATOR, hash_token(ALICE), hash_token(BOB)):
        assert all(secret not in text for text in shown)
    assert repr(users) == f"UsersFile({str(path)!r}, users=2)"


# -- the token check --------------------------------------------------------------------------------


def test_every_user_is_compared_whichever_matches(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check takes as long for the first user as for the last or for nobody: no early exit."""
    compared: list[str] = []
    real = users_module.hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(users_module.hmac, "compare_digest", counting)
    users = UsersFile(path)
    for token in (ALICE, BOB, "nobody's"):
        compared.clear()
        users.bearer(token)
        assert compared == [hash_token(ALICE), hash_token(BOB)]


def test_the_operator_token_opens_everything_as_the_server_os_user(path: Path) -> None:
    users = UsersFile(path, operator=SingleToken(OPERATOR, "op"))
    assert users.bearer(OPERATOR) == Principal("op", admin=True)
    assert users.bearer(ALICE) == Principal("alice", max_sessions=2)


def test_a_user_named_like_the_operator_is_refused(path: Path) -> None:
    with pytest.raises(UsersFileError, match="'alice', the server's own OS user"):
        UsersFile(path, operator=SingleToken(OPERATOR, "alice"))


def app_with(users: Any) -> TestClient:
    async def whoami(request: Request) -> JSONResponse:
        user = request.user
        return JSONResponse({"name": user.name, "admin": user.admin, "max_sessions": user.max_sessions})

    app = Starlette(routes=[Route("/sessions", whoami), Route("/v2.0/p/sessions", whoami)])
    app.add_middleware(TokenAuth, users=users)
    return TestClient(app)


def test_the_middleware_sets_the_user_of_each_token(path: Path) -> None:
    client = app_with(UsersFile(path, operator=SingleToken(OPERATOR, "op")))
    bearer = {"Authorization": f"Bearer {ALICE}"}
    assert client.get("/sessions", headers=bearer).json() == {
        "name": "alice",
        "admin": False,
        "max_sessions": 2,
    }
    assert client.get("/v2.0/p/sessions", headers={"X-Auth-Token": BOB}).json()["name"] == "bob"
    assert client.get("/sessions", headers={"Authorization": f"Bearer {OPERATOR}"}).json()["name"] == "op"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {hash_token(ALICE)}"}):
        reply = client.get("/sessions", headers=headers)
        assert reply.status_code == 401
        assert ALICE not in reply.text and hash_token(ALICE) not in reply.text


# -- reloads ----------------------------------------------------------------------------------------


def test_a_new_user_works_without_a_restart_once_the_file_is_looked_at_again(path: Path) -> None:
    clock = Clock()
    users = UsersFile(path, clock=clock)
    carol = new_token()
    write_users(path, [*read_users(path), User("carol", hash_token(carol))])
    clock.now += 0.5
    assert users.bearer(carol) is None  # looked at no more than once a second
    clock.now += 0.6
    assert users.bearer(carol) == Principal("carol")


def test_a_removed_user_and_an_old_token_stop_working(path: Path) -> None:
    clock = Clock()
    users = UsersFile(path, clock=clock)
    alice_again = new_token()
    write_users(path, [User("alice", hash_token(alice_again))])
    clock.now += 1.1
    assert users.bearer(BOB) is None
    assert users.bearer(ALICE) is None
    assert users.bearer(alice_again) == Principal("alice")


def test_the_file_is_not_read_again_when_it_did_not_change(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    users = UsersFile(path, clock=clock)
    reads: list[Path] = []
    real = users_module._read

    def counting(where: Path) -> Any:
        reads.append(where)
        return real(where)

    monkeypatch.setattr(users_module, "_read", counting)
    for _ in range(5):
        clock.now += 2
        assert users.bearer(ALICE) is not None
    assert reads == []
    path.chmod(0o640)  # a change of mode is a change too: it may make the file unsafe
    clock.now += 2
    users.bearer(ALICE)
    assert reads == [path]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda path: write_raw(path, "{oops"),
        lambda path: path.chmod(0o666),
        lambda path: path.unlink(),
        lambda path: write_raw(path, {"users": [{"name": "op", "token_sha256": "c" * 64}]}),
    ],
    ids=["bad JSON", "writable by others", "removed", "the operator's name"],
)
def test_a_bad_edit_keeps_the_users_of_before_and_warns_once(
    path: Path, caplog: pytest.LogCaptureFixture, breakage: Any
) -> None:
    clock = Clock()
    users = UsersFile(path, operator=SingleToken(OPERATOR, "op"), clock=clock)
    breakage(path)
    with caplog.at_level(logging.WARNING, "dli_kernel.server"):
        for _ in range(3):
            clock.now += 2
            assert users.bearer(ALICE) == Principal("alice", max_sessions=2)
            assert users.bearer(BOB) is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].endswith("The server keeps the 2 users it had until the file is fixed.")
    # Once fixed, the file counts again.
    if path.exists():
        path.unlink()
    write_users(path, [User("carol", hash_token(ALICE))])
    clock.now += 2
    assert users.bearer(ALICE) == Principal("carol")


# -- DLC keys ---------------------------------------------------------------------------------------


def test_a_user_s_dlc_key_derives_from_the_server_secret_and_their_token(path: Path) -> None:
    users = UsersFile(path, operator=SingleToken(OPERATOR, "op"), dlc_secret=SECRET)
    key, principal = users.dlc_key("alice") or ("", None)
    assert principal == Principal("alice", max_sessions=2)
    assert key == derive_dlc_key(SECRET, User("alice", hash_token(ALICE)))
    assert len(key) == 64 and key not in path.read_text()
    # Another secret, another name or another token: another key.
    assert key != derive_dlc_key(b"cd" * 32, User("alice", hash_token(ALICE)))
    assert key != derive_dlc_key(SECRET, User("alice", hash_token(BOB)))
    assert (users.dlc_key("bob") or ("", None))[0] not in (key, OPERATOR)


def test_a_rotated_token_rotates_the_dlc_key_and_a_removed_user_has_none(path: Path) -> None:
    clock = Clock()
    users = UsersFile(path, dlc_secret=SECRET, clock=clock)
    before = users.dlc_key("alice")
    write_users(path, [User("alice", hash_token(new_token()))])
    clock.now += 2
    after = users.dlc_key("alice")
    assert before is not None and after is not None and before[0] != after[0]
    assert users.dlc_key("bob") is None  # no operator: a SecretId nobody has


def test_any_other_secret_id_is_the_operator_s_with_the_server_token(path: Path) -> None:
    users = UsersFile(path, operator=SingleToken(OPERATOR, "op"), dlc_secret=SECRET)
    assert users.dlc_key("op") == (OPERATOR, Principal("op", admin=True))
    assert users.dlc_key("someone") == (OPERATOR, Principal("someone", admin=True))


def test_without_a_server_secret_users_have_no_dlc_key(path: Path) -> None:
    assert UsersFile(path).dlc_key("alice") is None


def test_the_server_secret_is_made_once_owner_only(tmp_path: Path) -> None:
    where = tmp_path / "state" / "dlc-secret"
    first = dlc_secret(where)
    assert mode(where) == 0o600
    assert len(first) == 64 and dlc_secret(where) == first
    assert sorted(p.name for p in where.parent.iterdir()) == ["dlc-secret"]


def test_a_server_secret_others_can_read_or_that_is_not_one_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "dlc-secret"
    dlc_secret(where)
    where.chmod(0o640)
    with pytest.raises(UsersFileError, match="can be read by other OS users"):
        dlc_secret(where)
    where.write_text("short")
    where.chmod(0o600)
    with pytest.raises(UsersFileError, match="is not a DLC secret"):
        dlc_secret(where)


def test_parse_users_reads_what_write_users_wrote(path: Path) -> None:
    assert parse_users(path.read_text(), path) == read_users(path)
    assert "token_sha256" not in repr(read_users(path))


def test_dlc_actions_sign_with_the_derived_key_behind_the_real_app(path: Path, tmp_path: Path) -> None:
    """The users file as the server uses it: the DLC key `dli-kernel users dlc-key` prints signs as alice."""
    from tests.unit.team_fakes import team_server

    clock = Clock()
    users = UsersFile(path, operator=SingleToken(OPERATOR, "op"), dlc_secret=SECRET, clock=clock)
    alice_key = derive_dlc_key(SECRET, User("alice", hash_token(ALICE)))
    with team_server(tmp_path, users=users) as team:
        made = team.dlc(
            "CreateNotebookSession",
            {"Name": "nb", "Kind": "pyspark", "DataEngineName": "e"},
            "alice",
            alice_key,
        )
        assert "Error" not in made, made
        assert team.manager.get(made["SessionId"]).owner == "alice"
        assert team.dlc("DescribeNotebookSessions", {}, "bob", alice_key)["Error"]["Code"].startswith(
            "AuthFailure"
        )
        listed = team.dlc("DescribeNotebookSessions", {}, "op", OPERATOR)
        assert [s["SessionId"] for s in listed["Sessions"]] == [made["SessionId"]]  # the operator is an admin
        write_users(path, [User("alice", hash_token(new_token()))])  # rotated: the old key stops working
        clock.now += 2
        assert team.dlc("DescribeNotebookSessions", {}, "alice", alice_key)["Error"]["Code"].startswith(
            "AuthFailure"
        )
