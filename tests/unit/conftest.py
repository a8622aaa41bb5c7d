"""Fixtures the manager's unit tests share: a fake driver launcher and a manager that uses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dli_kernel.server.manager import SessionManager
from tests.unit.manager_fakes import FakeLauncher, make_manager


@pytest.fixture(autouse=True)
def no_class_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests start no JVM: a server made in one neither uses nor builds a class-data archive (and its
    settings do not depend on whether this machine has one)."""
    monkeypatch.setenv("DLI_KERNEL_CDS", "0")


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def manager(tmp_path: Path, launcher: FakeLauncher) -> Iterator[SessionManager]:
    """A manager with fake drivers; files that need other settings define their own ``manager``."""
    manager = make_manager(tmp_path, launcher)
    try:
        yield manager
    finally:
        manager.close()
