"""Unit tests for dli_kernel.cli: the `dli-kernel` command's arguments and what it says when it refuses.

Nothing here starts a server, a kernel or Spark.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dli_kernel.cli import build_parser, main
from dli_kernel.embedded import default_state_dir


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("DLI_KERNEL_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # main() sets it; restored afterwards


def test_server_defaults_use_the_state_dir_kernels_look_in(tmp_path: Path) -> None:
    args = build_parser().parse_args(["server"])
    assert args.state_dir == str(default_state_dir()) == str(tmp_path / "runtime" / "dli-kernel")
    assert (args.host, args.port, args.master, args.keep_sessions, args.pool) == (
        "127.0.0.1",
        8998,
        "local[*]",
        False,
        None,  # serve() picks it by the master: 1 on a local one, 0 on a cluster
    )


def test_no_command_prints_the_help_listing_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dli-kernel ")
    for command in ("server", "users", "sessions", "install", "demo"):
        assert f"\n    {command} " in out


def test_an_unknown_command_is_argparses_error_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sesions"])
    assert info.value.code == 2
    assert "invalid choice: 'sesions'" in capsys.readouterr().err


def test_server_refusal_is_one_line_on_stderr_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    code = main(["server", "--host", "0.0.0.0", "--port", "0", "--state-dir", str(state_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("dli-kernel server: refusing to listen on 0.0.0.0, which is not a loopback address")
    assert err.count("\n") == 1
    assert not (state_dir / "server.json").exists()


def test_install_into_a_prefix_prints_each_kernelspec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["install", "--prefix", str(tmp_path / "prefix")]) == 0
    lines = capsys.readouterr().out.splitlines()
    kernels = tmp_path / "prefix" / "share" / "jupyter" / "kernels"
    assert lines == [f"installed {kernels / name}" for name in ("dli_pyspark", "dli_spark", "dli_sql")]
    for name in ("dli_pyspark", "dli_spark", "dli_sql"):
        spec = json.loads((kernels / name / "kernel.json").read_text())
        assert spec["argv"][0] == sys.executable


def test_demo_without_its_notebook_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebook = tmp_path / "missing.ipynb"
    assert main(["demo", "--notebook", str(notebook)]) == 2
    assert capsys.readouterr().err == (
        f"dli-kernel demo: no notebook at {notebook}; pass one with --notebook.\n"
    )
