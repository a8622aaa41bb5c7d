"""The peer: sparkmagic's ``pysparkkernel`` in a virtual environment of its own, pointed at our server.

sparkmagic requires requests-kerberos, whose default extras pull gssapi/krb5, which build only against
Debian's libkrb5-dev. Nothing the benchmarks do touches Kerberos, so sparkmagic and requests-kerberos are
installed with ``--no-deps`` and their runtime imports are installed by name instead: pyspnego without its
``kerberos`` extra is pure Python and satisfies ``import requests_kerberos``, which sparkmagic's
configuration module does unconditionally. ``notebook`` and ``jupyter`` (metapackages in sparkmagic's
metadata) are left out: at run time sparkmagic imports only ``jupyter_server`` from them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peer-venv"
AUTH_PATH = HERE / "peer_path"  # holds dli_bench_auth only, so nothing else of ours leaks into the peer
TOKEN_ENV = "DLI_BENCH_PEER_TOKEN"  # read by dli_bench_auth.BearerToken
KERNEL_NAME = "pysparkkernel"
PEER_KERNEL_MODULE = "sparkmagic.kernels.pysparkkernel.pysparkkernel"

SPARKMAGIC_VERSION = "0.23.0"
NO_DEPS = [
    f"sparkmagic=={SPARKMAGIC_VERSION}",
    f"hdijupyterutils=={SPARKMAGIC_VERSION}",
    f"autovizwidget=={SPARKMAGIC_VERSION}",
    "requests-kerberos==0.15.0",
]
RUNTIME_DEPS = [
    "pyspnego",
    "cryptography",
    "requests",
    "pandas<3",
    "numpy",
    "ipykernel",
    "ipython",
    "ipywidgets",
    "jupyter_server",
    "plotly",
    "tornado",
    "nest-asyncio",
    "six",
]
# Written last: a half-finished install is redone on the next run.
MARKER = VENV / "dli-bench-peer.json"


def python() -> Path:
    return VENV / "bin" / "python"


def kernels_dir() -> Path:
    return VENV / "share" / "jupyter" / "kernels"


def ensure_installed(log: Callable[[str], None] = print) -> None:
    """Create the peer's venv and register its kernelspec, unless a previous run finished doing so."""
    wanted = {"no_deps": NO_DEPS, "deps": RUNTIME_DEPS}
    if MARKER.exists() and python().exists() and json.loads(MARKER.read_text()) == wanted:
        return
    log(f"installing the peer (sparkmagic {SPARKMAGIC_VERSION}) into {VENV} ...")
    if not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", *NO_DEPS], check=True)
    subprocess.run([*pip, *RUNTIME_DEPS], check=True)
    subprocess.run(
        [str(python()), "-c", f"import {PEER_KERNEL_MODULE}"],
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(AUTH_PATH)},
    )
    spec_dir = kernels_dir() / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(python()), "-m", PEER_KERNEL_MODULE, "-f", "{connection_file}"],
        "display_name": "PySpark (sparkmagic)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    MARKER.write_text(json.dumps(wanted))


def write_config(conf_dir: Path, url: str) -> None:
    """sparkmagic's config.json for our server's Livy paths, with the bearer-token authenticator."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "kernel_python_credentials": {"username": "", "password": "", "url": url, "auth": "DliBearer"},
        "authenticators": {
            "DliBearer": "dli_bench_auth.BearerToken",
            "None": "sparkmagic.auth.customauth.Authenticator",
        },
        # Its defaults (60 s to start, 15 s to go idle) fail cold starts on a loaded 2-core machine; the
        # benchmarks time the wait, so it must not give up.
        "livy_session_startup_timeout_seconds": 900,
        "wait_for_idle_timeout_seconds": 900,
        "use_auto_viz": False,
    }
    (conf_dir / "config.json").write_text(json.dumps(config, indent=1))


def kernel_env(base: dict[str, str], conf_dir: Path, token: str) -> dict[str, str]:
    """The environment sparkmagic's kernel runs in: its config, our authenticator, the token."""
    return dict(base, SPARKMAGIC_CONF_DIR=str(conf_dir), PYTHONPATH=str(AUTH_PATH), **{TOKEN_ENV: token})
