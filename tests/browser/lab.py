"""JupyterLab and a notebook page in Chromium, for the browser tests.

``JupyterLab`` is ``python -m jupyterlab`` on a free 127.0.0.1 port with a token, its own root, config,
data, runtime, settings and workspaces directories, and this project's kernels installed in its data dir.
``Notebook`` is one notebook open in a Playwright page: its cells by name, run one at a time, what their
output areas show, screenshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import requests
from playwright.sync_api import Browser, Locator, Page, expect

from dli_kernel.install import install
from tests.integration.conftest import wait_until

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it where it is missing
# The machine has no network beyond loopback: nothing Chromium would fetch on its own (updates, sync,
# field trials, QUIC probes). No sandbox: CI runs as root in a container, whose /dev/shm is often too small
# for Chromium's shared memory. Playwright gives each launch a fresh --user-data-dir of its own (it refuses
# one in these args).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1200, "height": 800}
LAB_START_S = 120  # JupyterLab imports a lot; on two busy cores it took 4 s, leave room
CELL_S = 120  # a cell on a ready session; the tests pass longer waits where a session or JVM starts
PAGE_MS = 90_000  # the notebook page: JupyterLab's bundles load and the kernel starts

# JupyterLab's own settings: never ask about (or fetch) Jupyter news, which would put a toast over the cells.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


class JupyterLab:
    """A JupyterLab server of the test's own; ``stop`` ends it and every kernel it started."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.root = home / "notebooks"
        self.runtime = home / "runtime"
        self.log_path = home / "jupyterlab.log"
        self.token = secrets.token_hex(24)
        self.secrets = [self.token, *(v for k, v in env.items() if k.endswith("TOKEN"))]
        data = home / "share" / "jupyter"
        config = home / "config"
        for folder in (self.root, self.runtime, config):
            folder.mkdir(parents=True)
        install(prefix=str(home))  # home/share/jupyter/kernels: the data dir's kernels
        _write_private(
            config / "jupyter_server_config.json",
            {
                "IdentityProvider": {"token": self.token},
                "ServerApp": {
                    "ip": "127.0.0.1",
                    "port": 0,  # the OS picks a free port; the runtime file says which
                    "port_retries": 0,
                    "open_browser": False,
                    "root_dir": str(self.root),
                    "allow_root": True,  # CI containers run as root
                    "terminals_enabled": False,
                },
                "LabApp": {
                    "news_url": None,
                    "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
                    "extension_manager": "readonly",  # the default one asks PyPI
                },
                "LanguageServerManager": {"autodetect": False},
            },
        )
        settings = home / "lab-settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "DLI_KERNEL_"))}
        child_env.update(
            env,
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_DATA_DIR=str(data),
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        # A session of its own, so that a stop that has to kill reaches whatever it started in its group.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab"],
            env=child_env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            info = wait_until(
                self._server_info, lambda: f"JupyterLab to listen: {self.log_tail()}", LAB_START_S
            )
            self.url = f"http://127.0.0.1:{info['port']}"
            self.http = requests.Session()
            self.http.headers["Authorization"] = f"token {self.token}"
            wait_until(self._answers, lambda: f"JupyterLab to answer: {self.log_tail()}", LAB_START_S, 0.2)
        except BaseException:
            self.stop()
            raise

    def _server_info(self) -> dict[str, Any] | None:
        assert self.process.poll() is None, (
            f"JupyterLab exited ({self.process.returncode}): {self.log_tail()}"
        )
        for path in self.runtime.glob(f"jpserver-{self.process.pid}.json"):
            with contextlib.suppress(OSError, ValueError):
                return json.loads(path.read_text())
        return None

    def _answers(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return self.api("GET", "/api/status").status_code == 200
        return False

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url + path, **kwargs)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<token>")
        return text

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return self.redact("\n".join(text.splitlines()[-lines:]))

    def shutdown_kernels(self, path: str | None = None) -> None:
        """Shut down the kernels of the notebook ``path`` (all, without one) the way JupyterLab's own
        "Shut Down Kernel" does: each kernel deletes its remote session on its way out."""
        for session in self.api("GET", "/api/sessions").json():
            if path is None or session["path"] == path:
                self.api("DELETE", f"/api/sessions/{session['id']}", timeout=90)
        wait_until(lambda: not self._kernels(path), f"the kernels of {path or 'JupyterLab'} to end", 60, 0.2)

    def _kernels(self, path: str | None) -> list[dict[str, Any]]:
        return [s for s in self.api("GET", "/api/sessions").json() if path is None or s["path"] == path]

    def stop(self) -> list[int]:
        """Stop JupyterLab (its kernels first); the pids of kernels that had to be killed."""
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.shutdown_kernels()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._log.close()
        # Kernels run in sessions of their own (jupyter_client starts them so); each names a connection
        # file in this server's runtime dir, which no other process on the machine does.
        left = _processes_naming(str(self.runtime))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left


class Notebook:
    """A notebook open in a page. Cells are named; ``run`` runs one and waits for its end."""

    def __init__(self, page: Page, name: str, cells: dict[str, str], shots: Path) -> None:
        self.page = page
        self.name = name
        self.keys = list(cells)
        self.shots = shots
        self._shot = 0

    def cell(self, key: str) -> Locator:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(self.keys.index(key))

    def output(self, key: str) -> Locator:
        """The cell's whole output area (all its outputs)."""
        return self.cell(key).locator(".jp-OutputArea")

    def start(self, key: str) -> None:
        """Run the cell (Ctrl+Enter in its editor: the cell stays where it is, no cell is added)."""
        self.cell(key).locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Control+Enter")

    def wait_done(self, key: str, timeout_s: float = CELL_S) -> None:
        """Until the cell's prompt shows its execution count, ``[n]:``, instead of ``[*]:``."""
        prompt = self.cell(key).locator(".jp-InputPrompt")
        expect(prompt).to_have_text(re.compile(r"\[\d+\]:"), timeout=timeout_s * 1000)

    def run(self, key: str, timeout_s: float = CELL_S) -> Locator:
        self.start(key)
        self.wait_done(key, timeout_s)
        return self.output(key)

    def expect_idle(self, timeout_s: float = 30) -> None:
        indicator = self.page.locator(".jp-Notebook-ExecutionIndicator")
        expect(indicator).to_have_attribute("data-status", "idle", timeout=timeout_s * 1000)

    def shot(self, step: str, show: Locator | None = None) -> Path:
        """A screenshot of the page as it is now (scrolled to ``show``), numbered in the order taken."""
        if show is not None:
            show.scroll_into_view_if_needed()
        self._shot += 1
        path = self.shots / f"{self.name}-{self._shot:02d}-{step}.png"
        self.page.screenshot(path=path)
        return path

    def save(self) -> None:
        """Save the notebook (outputs and all) through JupyterLab's own save button."""
        self.page.locator('jp-button[data-command="docmanager:save"]').click()
        expect(self.page.locator(".lm-TabBar-tab.jp-mod-dirty")).to_have_count(0, timeout=15_000)


@contextlib.contextmanager
def open_notebook(
    browser: Browser, lab: JupyterLab, name: str, kernel: str, cells: dict[str, str], shots: Path
) -> Iterator[Notebook]:
    """Write the notebook ``name`` (cells not run, kernelspec ``kernel``), open it in a new page and wait
    for its kernel; afterwards save it into ``shots``, close the page and shut the kernel down."""
    spec = lab.api("GET", "/api/kernelspecs").json()["kernelspecs"][kernel]["spec"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in cells.values()])
    notebook.metadata["kernelspec"] = {
        "name": kernel,
        "display_name": spec["display_name"],
        "language": spec["language"],
    }
    path = f"{name}.ipynb"
    nbformat.write(notebook, lab.root / path)
    # The token goes as a header, never in a URL that an error message could show.
    context = browser.new_context(
        viewport=VIEWPORT, extra_http_headers={"Authorization": f"token {lab.token}"}
    )
    try:
        page = context.new_page()
        page.set_default_timeout(PAGE_MS)
        # A workspace of its own: JupyterLab would otherwise reopen the notebooks of the last page too.
        page.goto(f"{lab.url}/lab/workspaces/{name}/tree/{path}?reset")
        opened = Notebook(page, name, cells, shots)
        expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(len(cells), timeout=PAGE_MS)
        # A kernel JupyterLab could not find would ask through a dialog: the kernels were not installed.
        assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").inner_text()
        expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_be_visible()
        page.keyboard.press("Escape")  # command mode, where Ctrl+B is "toggle the left sidebar"
        page.keyboard.press("Control+b")  # the cells get the width
        expect(page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")).to_have_count(0)
        try:
            opened.expect_idle(PAGE_MS / 1000)
        except AssertionError as err:  # a kernel that died on its way up says why in JupyterLab's log
            raise AssertionError(f"{err}\nJupyterLab's log:\n{lab.log_tail()}") from None
        yield opened
        with contextlib.suppress(Exception):  # what the page showed is already checked
            opened.save()
            shutil.copy(lab.root / path, shots / path)
    finally:
        context.close()
        lab.shutdown_kernels(path)


def _write_private(path: Path, content: dict[str, Any]) -> None:
    path.touch(mode=0o600)
    path.write_text(json.dumps(content, indent=1))


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids
