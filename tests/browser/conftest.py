"""The browser tests' world, once per run: a real embedded sessions server (real PySpark), JupyterLab with
this project's kernels pointed at it, and Debian's Chromium driven by Playwright.

Screenshots (and each notebook as it was saved, and the servers' logs without tokens) go to
``test-artifacts/browser/`` (``BROWSER_TEST_ARTIFACTS`` overrides it). With ``BROWSER_TEST_DOCS_IMAGES=1``
the screenshots the README shows are also written to ``docs/images/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.lab import CHROMIUM, CHROMIUM_ARGS, JupyterLab, Notebook, open_notebook
from tests.integration.conftest import Server, driver_pids, poll, wait_gone, wait_until

ARTIFACTS_ENV = "BROWSER_TEST_ARTIFACTS"
DOCS_IMAGES_ENV = "BROWSER_TEST_DOCS_IMAGES"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in item.path.parts:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    """A failed check leaves a screenshot of the page as it was then."""
    report = yield
    if report.failed and call.when == "call":
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Notebook):
                with contextlib.suppress(Exception):
                    value.shot(f"FAILED-{item.name}")
    return report


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; without it the tests skip, except in CI (``CI`` set), where .ci/run installs it."""
    if not CHROMIUM.exists():
        reason = f"Debian's chromium is not installed ({CHROMIUM}); .ci/run installs it with apt-get"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI is set: the browser test must run in CI")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> Path:
    """The folder of this run's screenshots, emptied of the last run's."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or pytestconfig.rootpath / "test-artifacts" / "browser")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def readme_image(pytestconfig: pytest.Config) -> Callable[[Path, str], None]:
    """``readme_image(shot, name)``: with ``BROWSER_TEST_DOCS_IMAGES=1``, the screenshot becomes
    docs/images/``name`` (256 colours: a small PNG for the README); otherwise nothing, so that a test run
    leaves the checkout as it was."""
    folder = pytestconfig.rootpath / "docs" / "images"

    def keep(shot: Path, name: str) -> None:
        if os.environ.get(DOCS_IMAGES_ENV):
            from PIL import Image  # matplotlib's dependency, in the server extra

            folder.mkdir(parents=True, exist_ok=True)
            with Image.open(shot) as image:
                image.convert("RGB").quantize(256).save(folder / name, optimize=True)

    return keep


@pytest.fixture(scope="session")
def sessions_server(
    chromium: Path, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[Server]:
    """A server of the browser tests' own, without a warm pool: a kernel's first cell waits for a session
    that is really starting, which is the status line the tests look for."""
    state_dir = tmp_path_factory.mktemp("browser-server") / "state"
    server = Server(state_dir)
    try:
        yield server
    finally:
        # A kernel JupyterLab shut down last may still be deleting its session.
        poll(lambda: not server.live_sessions(), 60, 0.2)
        leaked = server.live_sessions()
        for session in leaked:
            server.delete(f"/sessions/{session['id']}")
        code = server.stop()
        logged = server.stderr_path.read_text(errors="replace")
        (artifacts / "sessions-server.log").write_text(logged.replace(server.token, "<token>"))
    assert not leaked, f"the kernels left sessions behind: {[s['id'] for s in leaked]}"
    assert all(wait_gone(pid, timeout=5) for pid in driver_pids(state_dir)), "a driver outlived the server"
    assert code in (0, -signal.SIGTERM)
    assert server.token not in logged


@pytest.fixture(scope="session")
def lab(
    sessions_server: Server, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[JupyterLab]:
    """JupyterLab whose kernels use ``sessions_server`` (they find it by DLI_KERNEL_URL and _TOKEN)."""
    env = {
        "DLI_KERNEL_URL": sessions_server.url,
        "DLI_KERNEL_DIALECT": "local",
        "DLI_KERNEL_TOKEN": sessions_server.token,
    }
    jupyter = JupyterLab(tmp_path_factory.mktemp("jupyterlab"), env)
    killed: list[int] = []
    try:
        yield jupyter
    finally:
        killed = jupyter.stop()
        (artifacts / "jupyterlab.log").write_text(jupyter.log_tail(lines=100_000))
    assert not killed, f"kernels outlived JupyterLab and were killed: pids {killed}"


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def notebook(
    browser: Browser, lab: JupyterLab, sessions_server: Server, artifacts: Path
) -> Callable[[str, str, dict[str, str]], contextlib.AbstractContextManager[Notebook]]:
    """``notebook(name, kernel, cells)``: a context manager holding the notebook open in a page; on exit
    its kernel is shut down and its remote session must be gone."""

    @contextlib.contextmanager
    def opened(name: str, kernel: str, cells: dict[str, str]) -> Iterator[Notebook]:
        with open_notebook(browser, lab, name, kernel, cells, artifacts) as page:
            yield page
            used = [session["id"] for session in sessions_server.live_sessions()]
        wait_until(
            lambda: not sessions_server.live_sessions(),
            f"the {kernel} kernel's session to end with the kernel",
            60,
            0.2,
        )
        ended = {sid: sessions_server.get(f"/sessions/{sid}").json()["state"] for sid in used}
        assert set(ended.values()) <= {"killed"}, f"not deleted by the kernel's shutdown: {ended}"

    return opened
