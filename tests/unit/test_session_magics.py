"""``%session`` against a fake holder and client: the dispatch table, and subcommands that need no Spark."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError

from dli_kernel.client import SessionInfo
from dli_kernel.kernel.magics import session as session_module
from dli_kernel.kernel.magics.runner import StatementRunner
from dli_kernel.kernel.magics.session import COMMANDS, SessionMagics, session_parser
from dli_kernel.spec import SessionSpec


class FakeClient:
    def __init__(self, sessions: list[SessionInfo]) -> None:
        self.sessions = sessions
        self.deleted: list[str] = []
        self.filters: dict[str, Any] = {}

    def list_sessions(self, **filters: Any) -> list[SessionInfo]:
        self.filters = filters
        return self.sessions  # as plain Livy does: the filters are ignored

    def get_session(self, session_id: str) -> SessionInfo:
        return next(info for info in self.sessions if info.id == session_id)

    def delete_session(self, session_id: str) -> None:
        self.deleted.append(session_id)


class FakeHolder:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.spec = SessionSpec()
        self.session = None
        self.dropped = 0

    def is_mine(self, session_id: str) -> bool:
        return False

    def drop(self, note: str = "") -> None:
        self.dropped += 1


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    bundles: list[dict[str, str]] = []
    monkeypatch.setattr(session_module, "publish_display_data", bundles.append)
    return bundles


def magics(*sessions: SessionInfo) -> SessionMagics:
    return SessionMagics(None, StatementRunner(FakeHolder(FakeClient(list(sessions)))))  # type: ignore[arg-type]


def test_every_subcommand_has_a_handler_and_every_handler_a_subcommand() -> None:
    subparsers = next(a for a in session_parser()._actions if a.dest == "command")
    assert set(COMMANDS) == set(subparsers.choices or ())


def test_no_subcommand_means_info(shown: list[dict[str, str]]) -> None:
    magics().session("")
    assert "none yet" in shown[0]["text/plain"]


def test_list_filters_here_what_the_server_ignored(shown: list[dict[str, str]]) -> None:
    m = magics(
        SessionInfo(id="1", state="idle", kind="pyspark", name="a"),
        SessionInfo(id="2", state="dead", kind="pyspark", name="b"),
        SessionInfo(id="3", state="busy", kind="sql", name="c"),
    )
    m.session("list --state idle,busy --kind pyspark")
    assert m.holder.client.filters == {"state": "idle,busy", "kind": "pyspark"}  # type: ignore[attr-defined]
    rows = shown[0]["text/plain"].splitlines()[1:-1]
    assert [row.split()[1] for row in rows] == ["1"] and rows[0].split()[0] == "a"


def test_kill_needs_force_and_leaves_the_session_without_it(capsys: pytest.CaptureFixture[str]) -> None:
    m = magics(SessionInfo(id="4", state="idle", name="theirs", owner="bob"))
    with pytest.raises(UsageError, match=r"ending session 4 \(theirs, owner bob\).*add -f"):
        m.session("kill 4")
    assert m.holder.client.deleted == []  # type: ignore[attr-defined]
    m.session("kill 4 -f")
    assert m.holder.client.deleted == ["4"] and "Session 4 killed." in capsys.readouterr().out  # type: ignore[attr-defined]


def test_a_cell_is_only_for_configure() -> None:
    with pytest.raises(UsageError, match="only as %%session configure"):
        magics().session("list", "{}")


def test_stop_without_a_session(capsys: pytest.CaptureFixture[str]) -> None:
    m = magics()
    m.session("stop")
    assert capsys.readouterr().out == "This notebook has no session.\n" and m.holder.dropped == 0  # type: ignore[attr-defined]
