"""``dli-kernel demo``: run the quickstart notebook headless against the embedded default, print its outputs.

Nothing is configured for the kernel, so it does what a new user's kernel does: it starts the embedded
server and a Spark session. The server is a private one (its own runtime directory), stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, TextIO

from dli_kernel.protocol import ENV_PREFIX, SERVER_FILE

# Package data, so the demo runs from an installed wheel as well as from a checkout.
QUICKSTART = Path(__file__).resolve().with_name("notebooks") / "quickstart.ipynb"


def run_notebook(
    notebook: Path, output: Path, out: TextIO, kernel_name: str | None = None, timeout: float = 600
) -> int:
    """Execute ``notebook`` with nbclient, print each cell's outputs to ``out``, write it to ``output``.

    Returns 0 when every cell ran (errors only in cells tagged ``raises-exception``), else 1.
    """
    import nbformat  # the demo's own dependencies, not the kernel's
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from dli_kernel.install import install

    nb = nbformat.read(notebook, as_version=4)
    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name", "dli_pyspark")
    with tempfile.TemporaryDirectory(prefix="dli-kernel-demo-") as scratch:
        root = Path(scratch)
        install(prefix=str(root / "prefix"))
        env = _demo_env(root)
        manager = KernelManager(
            kernel_name=name,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(root / "prefix/share/jupyter/kernels")]),
        )
        began = time.monotonic()

        def on_cell_executed(cell: Any, cell_index: int, **_: Any) -> None:
            _print_cell(cell, cell_index, out, time.monotonic() - began)

        client = NotebookClient(
            nb,
            km=manager,
            timeout=timeout,
            startup_timeout=120,
            on_cell_executed=on_cell_executed,
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        status = 0
        try:
            with _environment(env):
                client.execute()
        except CellExecutionError as err:
            print(f"\nthe notebook stopped on an unexpected error:\n{err}", file=out)
            status = 1
        except RuntimeError as err:  # nbclient's word for a kernel that died, at start or in a cell
            print(f"\nthe {name} kernel stopped: {err}", file=out)
            status = 1
        finally:
            # nbclient leaves a kernel it did not start to its owner; a dead one has nothing to shut down
            # (and nbclient already closed its sockets).
            if manager.has_kernel and manager.is_alive():
                manager.shutdown_kernel(now=False)  # the kernel deletes its session
            _stop_embedded_server(root / "runtime" / "dli-kernel")
        output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output)
    print(
        f"\nran {notebook.name} in {time.monotonic() - began:.1f} s; executed notebook written to {output}",
        file=out,
    )
    return status


def _demo_env(root: Path) -> dict[str, str]:
    """The environment of a user who configured nothing, with a runtime directory of the demo's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "HUAWEICLOUD_SDK_"))}
    env["JUPYTER_CONFIG_DIR"] = str(root / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
    return env


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    # The kernel manager hands the kernel this process's environment; set it for the run and restore it.
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _stop_embedded_server(state_dir: Path, timeout: float = 60) -> None:
    """Stop the server the kernel started; a user's server outlives its kernels, the demo's should not."""
    try:
        pid = json.loads((state_dir / SERVER_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (state_dir / SERVER_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _print_cell(cell: Any, index: int, out: TextIO, elapsed: float) -> None:
    if cell.cell_type != "code":
        return
    print(f"\n── cell {index} ({elapsed:.1f} s) " + "─" * 50, file=out)
    print(textwrap.indent(cell.source.rstrip(), "  │ ", lambda line: True), file=out)
    for output in cell.get("outputs", []):
        text = _output_text(output)
        if text:
            print(textwrap.indent(text.rstrip("\n"), "  "), file=out)
    out.flush()


def _output_text(output: Any) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind == "error":
        return f"{output.get('ename')}: {output.get('evalue')}"
    data = output.get("data", {})
    if "image/png" in data:
        return f"[a figure: image/png, {len(data['image/png']) * 3 // 4 // 1024} KB]"
    return data.get("text/plain", "")
