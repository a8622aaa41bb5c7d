"""Install the three kernelspecs (PySpark, Spark, Spark SQL) through jupyter_client."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

KERNELS = {
    "dli_pyspark": ("PySpark (DLI)", "python", "pyspark"),
    "dli_spark": ("Spark (DLI)", "scala", "spark"),
    "dli_sql": ("Spark SQL (DLI)", "sql", "sql"),
}


def kernel_json(name: str, python: str = sys.executable) -> dict:
    display_name, language, kind = KERNELS[name]
    return {
        "argv": [python, "-m", "dli_kernel.kernel", "-f", "{connection_file}", f"--SparkKernel.kind={kind}"],
        "display_name": display_name,
        "language": language,
        "metadata": {"debugger": False},
    }


def install(user: bool = False, prefix: str | None = None) -> list[str]:
    """Install every kernelspec; returns where each went."""
    manager = KernelSpecManager()
    installed = []
    for name in KERNELS:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "kernel.json").write_text(json.dumps(kernel_json(name), indent=1))
            installed.append(manager.install_kernel_spec(folder, name, user=user, prefix=prefix))
    return installed
