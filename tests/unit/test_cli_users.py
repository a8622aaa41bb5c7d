"""Unit tests for `dli-kernel users ...` and the server's team, TLS and limit options on the command line.

Nothing here starts a server: the users commands only read and write files in tmp_path.
"""

from __future__ import annotations

import getpass
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dli_kernel.cli import build_parser, main
from dli_kernel.server.users import User, derive_dlc_key, dlc_secret, hash_token, read_users


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # main() sets it; restored afterwards


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return tmp_path / "team" / "users.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys: pytest.CaptureFixture[str], users_file: Path, name: str, *extra: str) -> str:
    code, out, err = run(capsys, "users", "add", name, "--users", str(users_file), *extra)
    assert code == 0, err
    token = out.strip()
    assert out == token + "\n"  # the token alone, on its own line
    assert token not in err
    return token


def test_add_prints_the_token_once_and_keeps_only_its_hash(
    capsys: pytest.CaptureFixture[str], users_file: Path
) -> None:
    token = add(capsys, users_file, "alice", "--max-sessions", "3")
    assert len(token) == 43
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert token not in users_file.read_text()
    assert read_users(users_file) == (User("alice", hash_token(token), admin=False, max_sessions=3),)
    admin = add(capsys, users_file, "bob@example.com", "--admin")
    assert admin != token
    assert [(u.name, u.admin) for u in read_users(users_file)] == [
        ("alice", False),
        ("bob@example.com", True),
    ]


def test_add_refuses_a_name_taken_or_not_allowed_and_leaves_the_file(
    capsys: pytest.CaptureFixture[str], users_file: Path
) -> None:
    add(capsys, users_file, "alice")
    before = users_file.read_text()
    for name, expected in (
        ("alice", "already has a user named 'alice'; 'dli-kernel users rotate alice'"),
        ("a b", "a user name is 1 to 64 of the characters"),
        (getpass.getuser(), "is this machine's OS user"),
    ):
        code, out, err = run(capsys, "users", "add", name, "--users", str(users_file))
        assert (code, out) == (2, "")
        assert err.startswith("dli-kernel users: ") and expected in err and err.count("\n") == 1
    assert users_file.read_text() == before


def test_adds_run_at_once_lose_no_user(users_file: Path, tmp_path: Path) -> None:
    """Each add reads the file, adds one and writes it back: without the lock, one would lose another's."""
    names = [f"user{number}" for number in range(8)]
    adds = [
        subprocess.Popen(
            [sys.executable, "-m", "dli_kernel", "users", "add", name, "--users", str(users_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path)},
        )
        for name in names
    ]
    tokens = {}
    for name, process in zip(names, adds, strict=True):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        tokens[name] = out.strip()
    users = read_users(users_file)
    assert sorted(user.name for user in users) == names
    assert {user.name: user.token_sha256 for user in users} == {n: hash_token(t) for n, t in tokens.items()}


def test_the_default_file_is_users_json_in_the_state_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    add(
        capsys,
        tmp_path / "unused",
        "first",
        "--state-dir",
        str(tmp_path / "s"),
        "--users",
        str(tmp_path / "x"),
    )
    code, _, err = run(capsys, "users", "add", "alice")
    assert code == 0, err
    assert [u.name for u in read_users(tmp_path / "runtime" / "dli-kernel" / "users.json")] == ["alice"]
    code, _, err = run(capsys, "users", "add", "bob", "--state-dir", str(tmp_path / "elsewhere"))
    assert code == 0, err
    assert [u.name for u in read_users(tmp_path / "elsewhere" / "users.json")] == ["bob"]


def test_list_shows_names_roles_and_limits_and_never_a_secret(
    capsys: pytest.CaptureFixture[str], users_file: Path
) -> None:
    tokens = [
        add(capsys, users_file, "alice", "--max-sessions", "2"),
        add(capsys, users_file, "root-ish", "--admin"),
    ]
    code, out, err = run(capsys, "users", "list", "--users", str(users_file))
    assert code == 0, err
    assert out.splitlines() == [
        "NAME      ROLE   MAX SESSIONS",
        "alice     user   2",
        "root-ish  admin  server default",
    ]
    for user in read_users(users_file):
        assert user.token_sha256 not in out + err
    assert all(token not in out + err for token in tokens)


def test_rotate_prints_a_new_token_and_the_old_one_is_gone(
    capsys: pytest.CaptureFixture[str], users_file: Path
) -> None:
    old = add(capsys, users_file, "alice", "--admin", "--max-sessions", "1")
    add(capsys, users_file, "bob")
    code, out, err = run(capsys, "users", "rotate", "alice", "--users", str(users_file))
    assert code == 0, err
    new = out.strip()
    assert out == new + "\n" and new != old and new not in err
    alice = read_users(users_file)[0]
    assert alice == User("alice", hash_token(new), admin=True, max_sessions=1)
    assert [u.name for u in read_users(users_file)] == ["alice", "bob"]


def test_remove_takes_the_user_out(capsys: pytest.CaptureFixture[str], users_file: Path) -> None:
    add(capsys, users_file, "alice")
    add(capsys, users_file, "bob")
    code, out, err = run(capsys, "users", "remove", "alice", "--users", str(users_file))
    assert (code, out) == (0, "")
    assert [u.name for u in read_users(users_file)] == ["bob"]
    code, out, err = run(capsys, "users", "remove", "alice", "--users", str(users_file))
    assert (code, out) == (2, "")
    assert "has no user named 'alice'" in err
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600


def test_commands_on_a_missing_file_say_how_to_make_one(
    capsys: pytest.CaptureFixture[str], users_file: Path
) -> None:
    for command in ("list", "remove", "rotate", "dlc-key"):
        argv = ["users", command, *([] if command == "list" else ["alice"]), "--users", str(users_file)]
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "")
        assert "dli-kernel users add NAME --users" in err
    assert not users_file.exists()


def test_dlc_key_prints_the_pair_the_server_derives(
    capsys: pytest.CaptureFixture[str], users_file: Path, tmp_path: Path
) -> None:
    token = add(capsys, users_file, "alice")
    state_dir = tmp_path / "state"
    argv = ("users", "dlc-key", "alice", "--users", str(users_file), "--state-dir", str(state_dir))
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    secret_file = state_dir / "dlc-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    key = derive_dlc_key(dlc_secret(secret_file), User("alice", hash_token(token)))
    assert out == f"TENCENTCLOUD_SECRET_ID=alice\nTENCENTCLOUD_SECRET_KEY={key}\n"
    assert key not in err and token not in out
    assert run(capsys, *argv)[1] == out  # the same key each time, until the token changes
    run(capsys, "users", "rotate", "alice", "--users", str(users_file))
    assert run(capsys, *argv)[1] != out


# -- the server's options ---------------------------------------------------------------------------


def test_server_team_tls_and_limit_options_parse() -> None:
    args = build_parser().parse_args(
        [
            "server",
            *("--users", "u.json", "--certfile", "c.pem", "--keyfile", "k.pem", "--driver-host", "10.0.0.5"),
            *("--max-sessions-per-user", "3", "--max-starting", "2", "--max-driver-memory", "64g"),
            *("--max-body", "128k", "--max-statement-body", "20m", "--master", "spark://h:7077"),
        ]
    )
    assert (args.users, args.certfile, args.keyfile, args.driver_host) == (
        "u.json",
        "c.pem",
        "k.pem",
        "10.0.0.5",
    )
    assert (args.max_sessions_per_user, args.max_starting, args.max_driver_memory) == (3, 2, 64 * 1024)
    assert (args.max_body, args.max_statement_body, args.pool) == (128 * 1024, 20 * 1024 * 1024, None)


def test_server_option_defaults_leave_the_settings_alone() -> None:
    args = build_parser().parse_args(["server"])
    values = (args.users, args.certfile, args.keyfile, args.driver_host, args.max_sessions_per_user)
    assert values == (None, None, None, None, None)
    assert (args.max_starting, args.max_driver_memory, args.max_body, args.max_statement_body) == (None,) * 4


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--max-sessions-per-user", "0", "must be a whole number, 1 or more (got '0')"),
        ("--max-starting", "two", "must be a whole number, 1 or more"),
        ("--max-driver-memory", "64", "must be a size with a unit, such as '2 GB'"),
        ("--max-body", "lots", "must be a size in bytes such as 65536, 64k or 10m"),
        ("--max-statement-body", "0", "must be a size in bytes"),
        ("--pool", "-1", "must be a whole number, 0 (no pool) or more"),
        ("--pool", "\u0663", "must be a whole number, 0 (no pool) or more"),  # an Arabic-Indic 3
    ],
)
def test_a_wrong_server_option_is_argparse_s_one_line(
    capsys: pytest.CaptureFixture[str], option: str, value: str, expected: str
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["server", option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {expected}" in err


def test_a_wrong_max_sessions_of_a_user_says_what_0_means(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["users", "add", "carol", "--max-sessions", "-1"])
    assert "must be a whole number, 0 (no sessions) or more (got '-1')" in capsys.readouterr().err


def test_a_server_refusal_of_a_users_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps({"users": [{"name": "x y"}]}))
    users_file.chmod(0o600)
    state_dir = tmp_path / "state"
    code, out, err = run(
        capsys, "server", "--port", "0", "--state-dir", str(state_dir), "--users", str(users_file)
    )
    assert (code, out) == (2, "")
    assert err.startswith(f"dli-kernel server: {users_file}: users[0]: name must be")
    assert not state_dir.exists()
