"""What a driver is started with: the Spark settings for a session's spec, and the process environment.

How a spec's resources (its ``sc_type`` tier, with explicit sizes over it) become Spark settings depends on
the master; the README's table of it mirrors ``executor_conf``:

==========================  ===========================================================================
master                      executors are asked with
==========================  ===========================================================================
``local``, ``local[N]``     the master ``local[executorCores × numExecutors]``: tasks run in the driver
``spark://…`` (standalone)  ``spark.executor.memory``, ``spark.executor.cores``,
                            ``spark.cores.max`` = executorCores × numExecutors
``yarn``, ``k8s://…``       ``spark.executor.memory``, ``spark.executor.cores``,
                            ``spark.executor.instances`` = numExecutors
==========================  ===========================================================================

Every master also gets ``spark.driver.memory`` and ``spark.driver.cores``; the user's own conf wins.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Any

from dli_kernel.protocol import ENV_PREFIX, SERVER_TOKEN_ENV
from dli_kernel.spec import Resources, SessionSpec, parse_number, spark_memory

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
# Hadoop's own variable (not ours): the user HDFS, YARN and Spark's Hadoop client act as under simple auth.
HADOOP_USER_ENV = "HADOOP_USER_NAME"
# spark-class's own variable: the options of the JVM that builds the driver's command line.
LAUNCHER_OPTS_ENV = "SPARK_LAUNCHER_OPTS"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def master_type(master: str) -> str:
    """``local``, ``standalone``, ``yarn`` or ``k8s``: which way this master is asked for executors.

    ``local-cluster[...]`` (Spark's test cluster) has real executors, so it counts as standalone; a master
    we do not know (``mesos://``...) is asked the YARN way, with an executor count.
    """
    if master == "local" or master.startswith("local["):
        return "local"
    if master.startswith(("spark://", "local-cluster[")):
        return "standalone"
    if master.startswith("k8s://"):
        return "k8s"
    return "yarn"


def is_local(master: str) -> bool:
    return master_type(master) == "local"


def executor_conf(kind: str, res: Resources) -> dict[str, str]:
    """The Spark conf that asks a master of type ``kind`` for the spec's executors."""
    conf = {
        "spark.executor.memory": spark_memory(res.executor_memory_mb),
        "spark.executor.cores": str(res.executor_cores),
    }
    if kind == "standalone":
        # A standalone master starts executors until the app holds spark.cores.max cores: that, not an
        # executor count, is what bounds the app there.
        conf["spark.cores.max"] = str(res.executor_cores * res.num_executors)
    else:
        conf["spark.executor.instances"] = str(res.num_executors)
    return conf


def expects_executors(settings: dict[str, Any]) -> bool:
    """Whether a driver started with these settings should have an executor before it takes statements:
    on a cluster master, unless dynamic allocation may leave it none until the first job asks."""
    if is_local(settings["master"]):
        return False
    conf = settings["conf"]
    if str(conf.get("spark.dynamicAllocation.enabled", "false")).strip().lower() != "true":
        return True
    least = (conf.get(f"spark.dynamicAllocation.{key}", "0") for key in ("minExecutors", "initialExecutors"))
    return any((parse_number(str(value).strip()) or 0) > 0 for value in least)


def executors_asked(settings: dict[str, Any]) -> str:
    """What Spark settings ask of the cluster, for a log line: ``2 × 1g, 1 core each``."""
    conf = settings["conf"]
    memory = conf.get("spark.executor.memory", "1g")
    cores = conf.get("spark.executor.cores", "1")
    each = f"{cores} core{'' if cores == '1' else 's'} each"
    cores_max = conf.get("spark.cores.max")
    if master_type(settings["master"]) == "standalone" and cores_max is not None:
        total, per_executor = parse_number(str(cores_max)), parse_number(str(cores))
        count = total // per_executor if total is not None and per_executor else "?"
        return f"{count} × {memory}, {each} (spark.cores.max={cores_max})"
    return f"{conf.get('spark.executor.instances', '?')} × {memory}, {each}"


def bind_address(driver_host: str) -> str:
    """Where the driver listens: the loopback when executors reach it there, else every interface, as
    executors on other machines must reach it at ``driver_host`` (which may be a name, or a NAT's)."""
    if driver_host == "localhost":
        return LOOPBACK
    try:
        loopback = ipaddress.ip_address(driver_host).is_loopback
    except ValueError:
        loopback = False
    return driver_host if loopback else ALL_INTERFACES


# A size as Spark reads spark.driver.memory: whole numbers, a bare one in MiB (JavaUtils.byteStringAsMb).
_SPARK_SIZE = re.compile(r"([0-9]{1,15})\s*([kmgtp]?)b?", re.IGNORECASE | re.ASCII)
_MIB_PER_SUFFIX = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}


def driver_memory_mb(spec: SessionSpec) -> int | None:
    """The memory a session's driver starts with, in MiB: its conf's ``spark.driver.memory`` where it has
    one (the user's conf wins, see ``spark_settings``), else the spec's; None for a value Spark cannot read.
    """
    value = spec.conf.get("spark.driver.memory")
    if value is None:
        return spec.effective_resources().driver_memory_mb
    match = _SPARK_SIZE.fullmatch(value.strip())
    if match is None:
        return None
    return math.ceil(int(match.group(1)) * _MIB_PER_SUFFIX[match.group(2).lower()])


def spark_settings(
    spec: SessionSpec,
    app_name: str,
    master: str,
    state_dir: Path,
    driver_host: str = LOOPBACK,
    cds_archive: Path | None = None,
) -> dict[str, Any]:
    """``{master, app_name, conf}`` for the driver's ``bootstrap``: the spec's resources as Spark conf,
    the user's own conf winning over ours. ``cds_archive``: the class-data archive the driver's JVM maps
    (see ``server/cds.py``), before the user's own Java options, which win where they differ."""
    res = spec.effective_resources()
    kind = master_type(master)
    conf = {
        "spark.driver.host": driver_host,
        "spark.driver.bindAddress": bind_address(driver_host),
        "spark.ui.showConsoleProgress": "false",
        "spark.port.maxRetries": "100",
        "spark.driver.memory": spark_memory(res.driver_memory_mb),
        "spark.driver.cores": str(res.driver_cores),
        "spark.sql.warehouse.dir": str(state_dir / "warehouse"),
    }
    if kind == "local":
        master = f"local[{res.executor_cores * res.num_executors}]"
        # Unused by local mode, but what `spark.conf.get` in a session shows of what it asked for.
        conf.update(executor_conf("yarn", res))
    else:
        conf.update(executor_conf(kind, res))
    for key, values in (
        ("spark.jars", spec.jars),
        ("spark.submit.pyFiles", spec.py_files),
        ("spark.files", spec.files),
        ("spark.archives", spec.archives),
    ):
        if values:
            conf[key] = ",".join(values)
    conf.update(spec.conf)
    # A classpath of the user's own goes before Spark's jars, where the archive's must be: the JVM would
    # only say so and start without it.
    if cds_archive is not None and not conf.get("spark.driver.extraClassPath"):
        user_options = conf.get(DRIVER_JAVA_OPTIONS, "").strip()
        conf[DRIVER_JAVA_OPTIONS] = " ".join(filter(None, (archive_options(cds_archive), user_options)))
    return {"master": master, "app_name": app_name, "conf": conf}


def archive_options(archive: Path) -> str:
    """The JVM options that map a class-data archive; a JVM it does not fit logs one line and goes on."""
    return f"-XX:SharedArchiveFile={archive} -Xshare:auto"


def launcher_archive(driver_archive: Path) -> Path:
    """The archive of spark-class's launcher JVM, beside the driver's."""
    return driver_archive.with_name(f"{driver_archive.stem}.launcher.jsa")


def launcher_options(driver_archive: Path) -> str:
    """SPARK_LAUNCHER_OPTS for spark-class's launcher JVM, which only builds the driver's command line:
    its archive, and the quick (C1) compiler only, as nothing in it runs long enough for C2 to pay off."""
    return f"-XX:TieredStopAtLevel=1 {archive_options(launcher_archive(driver_archive))}"


def driver_env(python: str, proxy_user: str | None = None, cds_archive: Path | None = None) -> dict[str, str]:
    """The server's environment for a driver: the Spark UI on the loopback, ``python`` for PySpark's
    workers, none of this project's variables (the server's token among them), ``proxy_user``'s name
    for Hadoop, and with ``cds_archive`` the launcher JVM's options (before the user's own)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    env.pop(SERVER_TOKEN_ENV, None)  # named too, in case the variable is ever renamed out of the prefix
    env.update(
        SPARK_LOCAL_IP=LOOPBACK,  # the Spark UI binds here, not on every interface
        # ...and its address (the session's sparkUiUrl, the cluster master's link to it) says so, rather
        # than spark.driver.host, where nothing answers for the UI when that is not the loopback.
        SPARK_PUBLIC_DNS=LOOPBACK,
        PYSPARK_PYTHON=python,
        PYSPARK_DRIVER_PYTHON=python,
    )
    env.pop("JPY_PARENT_PID", None)  # the server's parent kernel, if any, is not the driver's
    if proxy_user:
        # Under Hadoop's simple auth, Spark's Hadoop client (HDFS, YARN) acts as HADOOP_USER_NAME. On a
        # Kerberos cluster this is ignored: acting for another user there takes a principal and keytab
        # allowed to impersonate, which the user passes as spark.kerberos.* in the session's conf.
        env[HADOOP_USER_ENV] = proxy_user
    if cds_archive is not None:
        user_options = env.get(LAUNCHER_OPTS_ENV, "").strip()
        env[LAUNCHER_OPTS_ENV] = " ".join(filter(None, (launcher_options(cds_archive), user_options)))
    return env
