"""The log level a cell streams at: the setting (config file, ``DLI_KERNEL_LOG_LEVEL``), the holder's field,
``%session log-level``, ``%session logs --level``, and a statement's stream through the runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from dli_kernel.client import ConfigError, StatementInfo
from dli_kernel.client.models import LogPage
from dli_kernel.config import Settings, load_settings
from dli_kernel.kernel.holder import SessionHolder
from dli_kernel.kernel.magics import session as session_module
from dli_kernel.kernel.magics.runner import RemoteError, StatementRunner
from dli_kernel.kernel.magics.session import SessionMagics
from dli_kernel.protocol import LOG_LEVEL_ENV
from dli_kernel.spec import SessionSpec

SAMPLES = Path(__file__).parent / "spark_logs"
OVERFLOW = (SAMPLES / "overflow.log").read_text().splitlines()[8:]
ERROR = {"status": "error", "ename": "ArithmeticException", "evalue": "overflow", "traceback": []}


# -- the setting -------------------------------------------------------------------------------------


def settings(tmp_path: Path, env: dict[str, str], file: dict[str, Any] | None = None) -> Settings:
    path = tmp_path / "dli_kernel.json"
    if file is not None:
        path.write_text(json.dumps(file))
    return load_settings(env=env, config_file=path)


def test_the_level_is_warn_unless_set(tmp_path: Path) -> None:
    assert settings(tmp_path, {}).log_level == "warn"
    assert settings(tmp_path, {}, {"log_level": "quiet"}).log_level == "quiet"
    assert settings(tmp_path, {LOG_LEVEL_ENV: " INFO "}, {"log_level": "quiet"}).log_level == "info"


@pytest.mark.parametrize(
    ("env", "file", "where"),
    [({LOG_LEVEL_ENV: "loud"}, None, LOG_LEVEL_ENV), ({}, {"log_level": 3}, "log_level")],
)
def test_a_wrong_level_names_the_accepted_ones(
    tmp_path: Path, env: dict[str, str], file: dict[str, Any] | None, where: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{where} must be one of quiet, warn, info, all \(got"):
        settings(tmp_path, env, file)


def test_the_holder_reads_the_level_without_looking_for_a_server(tmp_path: Path) -> None:
    loaded = Settings(endpoint=None, defaults=SessionSpec(), source="test", log_level="info")
    holder = SessionHolder(settings_loader=lambda: loaded)
    assert holder.log_level == "info" and holder._client is None
    holder.log_level = "all"
    assert holder.log_level == "all"
    with pytest.raises(ValueError, match="quiet, warn, info, all"):
        holder.log_level = "loud"


# -- the magics ------------------------------------------------------------------------------------


class LogClient:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def logs(self, session_id: str, start: int | None = None, size: int = 100) -> LogPage:
        total = len(self.lines)
        start = max(total - size, 0) if start is None else start
        return LogPage(
            start=start, total=total, lines=tuple(self.lines[start : start + size] if size else ())
        )


class Holder:
    """What the runner and ``%session`` use of a SessionHolder."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self.client = LogClient(lines or [])
        self.log_level = "warn"
        self.replaced_note = ""
        self.session: Any = type("Session", (), {"id": "5", "info": type("Info", (), {"id": "5"})()})()

    def ready(self, on_state: Any = None) -> Any:
        return self.session


def magics(holder: Holder) -> SessionMagics:
    return SessionMagics(None, StatementRunner(holder))  # type: ignore[arg-type]


def test_session_log_level_shows_and_sets_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    holder = Holder()
    magics(holder).session("log-level")
    assert "level warn (one of quiet, warn, info, all)" in capsys.readouterr().out
    magics(holder).session("log-level INFO")
    assert holder.log_level == "info"
    with pytest.raises(UsageError, match=r"'loud' \(choose from 'quiet', 'warn', 'info', 'all'\)"):
        magics(holder).session("log-level loud")
    assert holder.log_level == "info"


def test_session_logs_shows_every_line_unless_given_a_level(capsys: pytest.CaptureFixture[str]) -> None:
    holder = Holder(OVERFLOW)
    magics(holder).session(f"logs -n {len(OVERFLOW)}")
    assert capsys.readouterr().out.splitlines() == OVERFLOW
    magics(holder).session(f"logs -n {len(OVERFLOW)} --level all")
    assert capsys.readouterr().out.splitlines() == OVERFLOW
    magics(holder).session(f"logs -n {len(OVERFLOW)} --level warn")
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 3 and "4 tasks failed in stage 0.0" in shown[1]
    assert (
        shown[2] == f"({len(OVERFLOW) - 1} of {len(OVERFLOW)} lines condensed; without --level, every line)"
    )


def test_session_logs_follows_condensed(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    holder = Holder(OVERFLOW[:28])
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            holder.client.lines = OVERFLOW  # the rest of the stage's failures come in
        else:
            raise KeyboardInterrupt  # the user stops following

    monkeypatch.setattr(session_module.time, "sleep", sleep)
    magics(holder).session("logs --follow --level warn")
    shown = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in shown[:2]] == ["ERROR Executor", "ERROR TaskSetManager"]
    assert "4 tasks failed in stage 0.0" in shown[1] and len(sleeps) == 2
    assert shown[2:] == [
        f"({len(OVERFLOW) - 1} of {len(OVERFLOW)} lines condensed; without --level, every line)"
    ]


# -- a statement's stream ----------------------------------------------------------------------------


def run(level: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], bool]:
    """Run a statement whose log is the overflow job's, in two batches; its stderr, and whether the
    runner asked for the log at all."""
    holder = Holder()
    holder.log_level = level
    asked = []

    def start(session: Any, on_log: Any = None, **follow: Any) -> tuple[StatementInfo, bool]:
        asked.append(on_log is not None)
        if on_log is not None:
            on_log(OVERFLOW[:28])
            on_log(OVERFLOW[28:])
        return StatementInfo(id=0, state="available", output=ERROR), False

    with pytest.raises(RemoteError):
        StatementRunner(holder).follow(start)  # type: ignore[arg-type]
    return capsys.readouterr().err.splitlines(), asked[0]


def test_a_cell_streams_the_log_condensed_at_its_level(capsys: pytest.CaptureFixture[str]) -> None:
    warn, asked = run("warn", capsys)
    assert asked and len(warn) == 3
    assert warn[0].startswith("ERROR Executor: Exception in task 2.0 in stage 0.0 (TID 2): SparkArithmetic")
    assert warn[1].startswith("ERROR TaskSetManager: 4 tasks failed in stage 0.0, job aborted: SparkArith")
    assert (
        warn[2] == f"({len(OVERFLOW) - 1} log lines condensed; %session logs -n {len(OVERFLOW)} shows them)"
    )
    assert run("all", capsys)[0] == OVERFLOW
    assert run("quiet", capsys) == ([], False)  # not even a request for the log
