"""What a driver is started with: the Spark settings for a session's spec, and the process environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dli_kernel.spec import SessionSpec, spark_memory


def spark_settings(spec: SessionSpec, app_name: str, master: str, state_dir: Path) -> dict[str, Any]:
    """``{master, app_name, conf}`` for the driver's ``bootstrap``: the spec's resources as Spark conf,
    the user's own conf winning over ours."""
    res = spec.effective_resources()
    if master.startswith("local"):
        master = f"local[{res.executor_cores * res.num_executors}]"
    conf = {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.showConsoleProgress": "false",
        "spark.port.maxRetries": "100",
        "spark.driver.memory": spark_memory(res.driver_memory_mb),
        "spark.driver.cores": str(res.driver_cores),
        "spark.executor.memory": spark_memory(res.executor_memory_mb),
        "spark.executor.cores": str(res.executor_cores),
        "spark.executor.instances": str(res.num_executors),
        "spark.sql.warehouse.dir": str(state_dir / "warehouse"),
    }
    for key, values in (
        ("spark.jars", spec.jars),
        ("spark.submit.pyFiles", spec.py_files),
        ("spark.files", spec.files),
        ("spark.archives", spec.archives),
    ):
        if values:
            conf[key] = ",".join(values)
    conf.update(spec.conf)
    return {"master": master, "app_name": app_name, "conf": conf}


def driver_env(python: str) -> dict[str, str]:
    """The server's environment, with the Spark UI on the loopback and ``python`` for PySpark's workers."""
    env = dict(os.environ)
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",  # the Spark UI binds here, not on every interface
        PYSPARK_PYTHON=python,
        PYSPARK_DRIVER_PYTHON=python,
    )
    env.pop("JPY_PARENT_PID", None)  # the server's parent kernel, if any, is not the driver's
    return env
