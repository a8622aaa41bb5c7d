"""Unit tests for ``dli-kernel sessions`` (dli_kernel/sessions_cli.py) and the filters it shares with
``%session list`` (dli_kernel/client/session_filter.py), against a fake Livy over real HTTP
(pytest-httpserver): what each command prints, the exit codes, and that the token never shows."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dli_kernel import sessions_cli
from dli_kernel.cli import build_parser, main
from dli_kernel.client import SessionInfo
from dli_kernel.client.dialects import LOCAL_PROJECT
from dli_kernel.client.session_filter import SessionFilter, matching_sessions
from dli_kernel.kernel.spark_log import condense
from dli_kernel.spec import SpecError

TOKEN = "tok-3f9a7c21-never-shown"


class FakeLivy:
    """Livy's sessions paths, ignoring list filters as plain Livy does; remembers what it was asked."""

    def __init__(self, server: HTTPServer) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.deleted: list[str] = []
        self.status = 200  # what every answer is, when not 200
        self.after_log_reads: list[str] = []  # lines each later log read adds, one a read
        self.links: dict[str, Any] | None = None  # signed browser links, as the embedded server gives
        server.expect_request(re.compile(r"/sessions.*")).respond_with_handler(self.handle)
        server.expect_request("/version").respond_with_handler(self.version)

    def version(self, request: Request) -> Response:
        return _json({"version": "fake", "extensions": ["links"] if self.links else []})

    def add(self, ident: int, state: str = "idle", **fields: Any) -> dict[str, Any]:
        body = {"id": ident, "state": state, "kind": "pyspark", "name": f"nb{ident}", "owner": "alice"}
        self.sessions[str(ident)] = {**body, **fields}
        return self.sessions[str(ident)]

    def handle(self, request: Request) -> Response:
        self.requests.append((request.method, request.path, dict(request.args)))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" or self.status == 401:
            return _json({"msg": "Unauthorized"}, 401)
        parts = request.path.strip("/").split("/")
        if parts == ["sessions"]:
            return _json({"from": 0, "total": len(self.sessions), "sessions": list(self.sessions.values())})
        session = self.sessions.get(parts[1])
        if session is None:
            return _json({"msg": f"Session '{parts[1]}' not found."}, 404)
        if request.method == "DELETE":
            self.deleted.append(parts[1])
            session["state"] = "killed"
            return _json({"msg": "deleted"})
        if parts[2:] == ["log"]:
            return self.log(parts[1], request.args)
        if parts[2:] == ["links"] and request.method == "POST" and self.links:
            return _json(self.links)
        return _json(session)

    def log(self, ident: str, args: Any) -> Response:
        lines = self.logs.setdefault(ident, [])
        if "from" in args and self.after_log_reads:
            lines.append(self.after_log_reads.pop(0))
        elif "from" in args and self.sessions[ident]["state"] == "busy":
            self.sessions[ident]["state"] = "success"  # ends once the added lines were read
        size = int(args.get("size", 100))
        start = int(args["from"]) if "from" in args else max(len(lines) - size, 0)
        return _json(
            {"id": int(ident), "from": start, "total": len(lines), "log": lines[start : start + size]}
        )


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DLI_KERNEL_", "HUAWEICLOUD_SDK_", "TENCENTCLOUD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # main() sets it; restored afterwards


@pytest.fixture
def livy(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeLivy:
    monkeypatch.setenv("DLI_KERNEL_URL", httpserver.url_for("/").rstrip("/"))
    monkeypatch.setenv("DLI_KERNEL_TOKEN", TOKEN)
    return FakeLivy(httpserver)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["sessions", *argv])
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


# -- help and version -------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


PARSERS = _parsers(build_parser())


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_every_help_text_is_plain_text_with_a_description(parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "`" not in text  # no ``literal`` and no :role:`target`
    assert not re.search(r":\w+:", text.replace("e.g.:", ""))
    assert parser.description and parser.description[0].isupper()


def test_the_commands_all_have_help() -> None:
    progs = {parser.prog for parser in PARSERS}
    for command in ("server", "users", "install", "demo", "sessions list", "sessions info", "sessions logs"):
        assert f"dli-kernel {command}" in progs
    assert "dli-kernel sessions kill" in progs


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from dli_kernel import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"dli-kernel {__version__}\n"


@pytest.mark.parametrize("argv", [[], ["sessions"], ["users"]])
def test_a_command_without_its_subcommand_prints_its_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['dli-kernel', *argv])} ") and "examples:" in out


# -- list ---------------------------------------------------------------------------------------------


def test_list_prints_the_table_of_session_list_with_the_filters_applied_here(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.add(1, name="ETL daily", create_time=1_700_000_000_000)
    livy.add(2, state="dead")
    livy.add(3, kind="sql")
    code, out, err = run(capsys, "list", "--state", "idle,busy", "--kind", "python", "--name", "etl")
    assert (code, err) == (0, "")
    header, *rows, note = out.splitlines()
    assert header.split()[:4] == ["name", "id", "state", "kind"]
    assert len(rows) == 1 and rows[0].split()[:5] == ["ETL", "daily", "1", "idle", "pyspark"]
    assert note == "1 row"
    # asked of the server too, with the kind as the server spells it
    assert livy.requests[-1][2] == {"state": "idle,busy", "kind": "pyspark", "name": "etl"}


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        (["--id", "2"], ["2"]),
        (["--cluster", "q1"], ["1"]),
        (["--owner", "bob"], ["3"]),
        (["--state", "KILLED"], []),
        ([], ["1", "2", "3"]),
    ],
)
def test_list_filters(
    options: list[str], kept: list[str], livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.add(1, cluster_name="q1")
    livy.add(2, queue="q2")
    livy.add(3, owner="bob")
    code, out, _ = run(capsys, "list", "--json", *options)
    assert code == 0 and [item["id"] for item in json.loads(out)] == kept


def test_list_json_has_the_same_fields_for_every_dialect(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.add(7, cluster_name="q", appId="app-7", create_time=1_700_000_000_000)
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "id": "7",
            "name": "nb7",
            "state": "idle",
            "kind": "pyspark",
            "cluster": "q",
            "owner": "alice",
            "created": "2023-11-14T22:13:20+00:00",
            "appId": "app-7",
            "sparkUiUrl": None,
            "driverLogUrl": None,
        }
    ]


def test_list_says_when_there_is_nothing(livy: FakeLivy, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0 and out.startswith("No sessions on http://")
    livy.add(1)
    code, out, _ = run(capsys, "list", "--owner", "nobody")
    assert code == 0 and out.startswith("No session matches http://")


@pytest.mark.parametrize(
    ("options", "said"),
    [(["--state", "idel"], "state must be one or more of"), (["--kind", "cobol"], "kind must be one of")],
)
def test_a_wrong_filter_is_a_usage_error_before_any_request(
    options: list[str], said: str, livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", *options)
    assert code == 2 and out == "" and livy.requests == []
    assert one_line(err).startswith(f"dli-kernel sessions list: {said}")


# -- info ---------------------------------------------------------------------------------------------


def test_info_prints_the_rows_of_session_info(livy: FakeLivy, capsys: pytest.CaptureFixture[str]) -> None:
    livy.add(4, appId="app-4", appInfo={"sparkUiUrl": "http://ui/4"})
    code, out, _ = run(capsys, "info", "4")
    rows = dict(line.split(None, 1) for line in out.splitlines() if len(line.split(None, 1)) == 2)
    assert code == 0 and rows["id"] == "4" and rows["appId"] == "app-4" and rows["state"] == "idle"
    assert "Spark UI" in out and "http://ui/4" in out
    assert "(requested)" not in out  # a shell asked for nothing: no default shown as if requested
    code, out, _ = run(capsys, "info", "4", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["sparkUiUrl"] == "http://ui/4" and shown["server"]["appId"] == "app-4"


def test_info_shows_links_that_open_in_a_browser_where_the_server_signs_them(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.add(4, appInfo={"sparkUiUrl": "http://server/sessions/4/ui", "driverLogUrl": "http://server/log"})
    livy.links = {"sparkUiUrl": "http://server/s/ui?sig=1", "driverLogUrl": "http://server/s/log?sig=2"}
    livy.links["expiresIn"] = 600
    code, out, _ = run(capsys, "info", "4")
    assert code == 0 and "http://server/s/ui?sig=1" in out and "http://server/s/log?sig=2" in out
    assert "http://server/sessions/4/ui" not in out and "open in a browser for 10 min" in out
    code, out, _ = run(capsys, "info", "4", "--json")
    assert json.loads(out)["browserLinks"] == {
        "sparkUiUrl": "http://server/s/ui?sig=1",
        "driverLogUrl": "http://server/s/log?sig=2",
        "expiresIn": 600,
    }


def test_an_unknown_id_is_one_sentence_and_exit_code_1(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("info", "logs", "kill"):
        code, out, err = run(capsys, command, "99", *(["-f"] if command == "kill" else []))
        assert code == 1 and out == ""
        assert one_line(err).startswith(f"dli-kernel sessions {command}: there is no session 99 on http://")
    assert livy.deleted == []


# -- errors -------------------------------------------------------------------------------------------


def test_a_refused_token_is_exit_code_1_naming_where_it_came_from_not_its_value(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.status = 401
    code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert "401" in one_line(err) and "DLI_KERNEL_TOKEN" in err


def test_a_bad_configuration_is_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DLI_KERNEL_URL", "http://livy:8998")
    monkeypatch.setenv("DLI_KERNEL_DIALECT", "dli")  # without a project id
    monkeypatch.setenv("DLI_KERNEL_TOKEN", TOKEN)
    code, out, err = run(capsys, "list")
    assert code == 2 and out == "" and "project id" in one_line(err)


def test_a_config_file_that_is_not_json_is_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config" / "dli_kernel.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"url": "http://livy:8998", "token": TOKEN})[:-1] + ",")
    code, _, err = run(capsys, "info", "1")
    assert code == 2 and "is not valid JSON" in one_line(err)


def test_no_endpoint_and_no_embedded_server_says_how_to_start_one_and_starts_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list")
    state_dir = tmp_path / "runtime" / "dli-kernel"
    assert code == 1 and out == ""
    assert one_line(err).startswith(
        f"dli-kernel sessions list: no embedded server is running for {state_dir}"
    )
    assert "dli-kernel server" in err
    assert not (state_dir / "server.json").exists()


def test_a_server_that_is_gone_is_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DLI_KERNEL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DLI_KERNEL_TOKEN", TOKEN)
    code, out, err = run(capsys, "list")
    assert code == 1 and out == "" and "could not connect" in one_line(err)


def test_the_embedded_server_of_the_state_dir_is_used_when_none_is_configured(
    httpserver: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []

    def answer(request: Request) -> Response:
        seen.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _json({"msg": "Unauthorized"}, 401)
        if request.path == "/version":
            return _json({"version": "test", "extensions": []})
        return _json({"from": 0, "total": 1, "sessions": [{"id": 5, "state": "idle", "kind": "sql"}]})

    httpserver.expect_request(re.compile(".*")).respond_with_handler(answer)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    url = httpserver.url_for("/").rstrip("/")
    (state_dir / "server.json").write_text(json.dumps({"url": url, "token": TOKEN, "pid": os.getpid()}))
    code, out, _ = run(capsys, "list", "--json", "--state-dir", str(state_dir))
    assert code == 0 and [item["id"] for item in json.loads(out)] == ["5"]
    assert f"/v2.0/{LOCAL_PROJECT}/sessions" in seen  # the embedded server's own dialect


# -- logs ---------------------------------------------------------------------------------------------


def test_logs_prints_the_last_lines_or_those_from_a_line(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.add(2)
    livy.logs["2"] = [f"line {i}" for i in range(10)]
    code, out, _ = run(capsys, "logs", "2", "-n", "3")
    assert code == 0 and out.splitlines() == ["line 7", "line 8", "line 9"]
    code, out, _ = run(capsys, "logs", "2", "--from", "1", "-n", "2")
    assert code == 0 and out.splitlines() == ["line 1", "line 2"]


def test_logs_at_a_level_are_condensed_as_a_cell_stream_is(
    livy: FakeLivy, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (Path(__file__).parent / "spark_logs" / "overflow.log").read_text().splitlines()
    livy.add(2)
    livy.logs["2"] = lines
    code, out, _ = run(capsys, "logs", "2", "--from", "0", "-n", str(len(lines)), "--level", "WARN")
    assert code == 0 and out.splitlines() == condense(lines, "warn") and len(out.splitlines()) < 5


def test_follow_shows_new_lines_until_the_session_ends(
    livy: FakeLivy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sessions_cli, "FOLLOW_EVERY", 0.0)
    livy.add(2, state="busy")
    livy.logs["2"] = ["first"]
    livy.after_log_reads = ["second", "third"]
    code, out, err = run(capsys, "logs", "2", "--follow")
    assert code == 0 and out.splitlines() == ["first", "second", "third"]
    assert err == "Session 2 has ended (success).\n"


def test_follow_ends_quietly_on_ctrl_c(
    livy: FakeLivy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sessions_cli.time, "sleep", interrupted)
    livy.add(2)
    livy.logs["2"] = ["only"]
    assert run(capsys, "logs", "2", "--follow")[:3] == (0, "only\n", "")


def test_a_level_outside_spark_logs_is_argparses_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sessions", "logs", "2", "--level", "loud"])
    assert info.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err


# -- kill ---------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_kill_with_f_deletes(livy: FakeLivy, capsys: pytest.CaptureFixture[str]) -> None:
    livy.add(3)
    assert run(capsys, "kill", "3", "-f") == (0, "Session 3 killed.\n", "")
    assert livy.deleted == ["3"]


def test_kill_of_an_ended_session_says_so(livy: FakeLivy, capsys: pytest.CaptureFixture[str]) -> None:
    livy.add(3, state="dead")
    assert run(capsys, "kill", "3", "-f") == (0, "Session 3 has already ended (state dead).\n", "")
    assert livy.deleted == []


def test_kill_without_a_terminal_needs_f(
    livy: FakeLivy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    livy.add(3)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # piped: no one to ask
    code, out, err = run(capsys, "kill", "3")
    assert code == 2 and out == "" and livy.deleted == []
    assert "add -f" in one_line(err) and "nothing was changed" in err


@pytest.mark.parametrize(("answer", "code", "deleted"), [("y\n", 0, ["3"]), ("\n", 1, []), ("", 1, [])])
def test_kill_on_a_terminal_asks_first(
    answer: str,
    code: int,
    deleted: list[str],
    livy: FakeLivy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    livy.add(3)
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    got, out, err = run(capsys, "kill", "3")
    assert got == code and livy.deleted == deleted
    assert err.startswith("End session 3 (nb3, owner alice, idle)? ")
    assert ("Session 3 killed." in out) == bool(deleted) and ("left running" in err) != bool(deleted)


# -- the filter %session list shares --------------------------------------------------------------


def test_the_filter_matches_as_the_embedded_server_does() -> None:
    info = SessionInfo(
        id="8", state="idle", kind="pyspark", name="Nightly ETL", owner="bob", raw={"queue": "q"}
    )
    assert SessionFilter.parse(name="etl", kind="Python", state="busy, idle", cluster="q").matches(info)
    assert not SessionFilter.parse(owner="alice").matches(info)
    assert not SessionFilter.parse(id="80").matches(info)
    assert SessionFilter.parse(state="running").states == ("running",)  # some Livy versions' busy
    with pytest.raises(SpecError, match="got 'idel'"):
        SessionFilter.parse(state="idle,idel")
    assert SessionFilter().empty and not SessionFilter.parse(owner="x").empty


def test_without_a_state_only_live_sessions_are_kept_whatever_the_backend_lists() -> None:
    ended = SessionInfo(id="9", state="dead")
    assert not SessionFilter().matches(ended)
    assert SessionFilter.parse(state="dead").matches(ended)
    assert SessionFilter().matches(SessionInfo(id="10", state="starting"))


def test_matching_sessions_asks_the_server_and_filters_what_it_answers() -> None:
    class Client:
        def __init__(self) -> None:
            self.asked: dict[str, Any] = {}

        def list_sessions(self, **filters: Any) -> list[SessionInfo]:
            self.asked = filters
            return [
                SessionInfo(id="1", state="idle", kind="sparkr"),
                SessionInfo(id="2", state="idle", kind="sql"),
            ]

    wanted = SessionFilter.parse(kind="sql", cluster="c", state="idle")
    client = Client()
    assert matching_sessions(client, wanted) == []  # neither runs on cluster c
    assert client.asked == {"state": "idle", "kind": "sql", "cluster_name": "c"}
    assert [i.id for i in matching_sessions(Client(), SessionFilter.parse(kind="sql"))] == ["2"]


def test_a_reader_that_stops_early_ends_the_command_quietly(livy: FakeLivy, tmp_path: Path) -> None:
    """``dli-kernel sessions logs ... | head -1``: no BrokenPipeError traceback, exit code 0."""
    import subprocess

    livy.add(2)
    livy.logs["2"] = [f"a long line of the log, number {i}" for i in range(50_000)]  # more than a pipe holds
    command = [sys.executable, "-m", "dli_kernel", "sessions", "logs", "2", "--from", "0", "-n", "50000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline() == b"a long line of the log, number 0\n"
        child.stdout.close()
        err = child.stderr.read().decode()
        code = child.wait(timeout=60)
    assert (code, err) == (0, "")
