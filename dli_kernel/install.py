"""Install the three kernelspecs (PySpark, Spark, Spark SQL) through jupyter_client.

The specs live in ``dli_kernel/kernelspec/``; installing copies one with its logos and points its
``argv[0]`` at this environment's Python, so the kernel runs where dli_kernel is installed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

SPECS = Path(__file__).parent / "kernelspec"
KERNELS = ("dli_pyspark", "dli_spark", "dli_sql")


def kernel_json(name: str, python: str = sys.executable) -> dict:
    spec = json.loads((SPECS / name / "kernel.json").read_text())
    spec["argv"][0] = python
    return spec


def install(user: bool = False, prefix: str | None = None) -> list[str]:
    """Install every kernelspec; returns where each went."""
    manager = KernelSpecManager()
    installed = []
    for name in KERNELS:
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / name
            shutil.copytree(SPECS / name, target)
            (target / "kernel.json").write_text(json.dumps(kernel_json(name), indent=1))
            installed.append(manager.install_kernel_spec(str(target), name, user=user, prefix=prefix))
    return installed
