"""Spark settings by master type, the driver's address, and the drivers' environment (no driver, no Java)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dli_kernel.protocol import SERVER_TOKEN_ENV
from dli_kernel.server.spark_conf import (
    bind_address,
    driver_env,
    executors_asked,
    expects_executors,
    master_type,
    spark_settings,
)
from dli_kernel.spec import SessionSpec

EXECUTOR_KEYS = (
    "spark.executor.memory",
    "spark.executor.cores",
    "spark.executor.instances",
    "spark.cores.max",
)
# 3 executors of 2 GB and 2 cores each, whatever the tier says.
EXPLICIT = SessionSpec(
    kind="pyspark", executor_memory_mb=2048, executor_cores=2, num_executors=3, driver_memory_mb=1024
)


def executor_conf(master: str, spec: SessionSpec, tmp_path: Path) -> dict[str, str]:
    conf = spark_settings(spec, "app", master, tmp_path)["conf"]
    return {key: conf[key] for key in EXECUTOR_KEYS if key in conf}


@pytest.mark.parametrize(
    ("master", "kind"),
    [
        ("local", "local"),
        ("local[*]", "local"),
        ("local[4]", "local"),
        ("local-cluster[2,1,1024]", "standalone"),
        ("spark://head:7077", "standalone"),
        ("spark://a:7077,b:7077", "standalone"),
        ("yarn", "yarn"),
        ("k8s://https://kube:6443", "k8s"),
        ("mesos://m:5050", "yarn"),
    ],
)
def test_master_types(master: str, kind: str) -> None:
    assert master_type(master) == kind


def test_standalone_bounds_the_app_by_its_cores_not_an_executor_count(tmp_path: Path) -> None:
    settings = spark_settings(EXPLICIT, "app", "spark://head:7077", tmp_path)
    assert settings["master"] == "spark://head:7077"
    assert executor_conf("spark://head:7077", EXPLICIT, tmp_path) == {
        "spark.executor.memory": "2g",
        "spark.executor.cores": "2",
        "spark.cores.max": "6",  # 2 cores × 3 executors
    }
    assert settings["conf"]["spark.driver.memory"] == "1g"


@pytest.mark.parametrize("master", ["yarn", "k8s://https://kube:6443"])
def test_yarn_and_kubernetes_ask_for_a_number_of_executors(master: str, tmp_path: Path) -> None:
    assert spark_settings(EXPLICIT, "app", master, tmp_path)["master"] == master
    assert executor_conf(master, EXPLICIT, tmp_path) == {
        "spark.executor.memory": "2g",
        "spark.executor.cores": "2",
        "spark.executor.instances": "3",
    }


def test_local_runs_the_executors_cores_in_the_driver(tmp_path: Path) -> None:
    assert spark_settings(EXPLICIT, "app", "local[*]", tmp_path)["master"] == "local[6]"
    assert "spark.cores.max" not in executor_conf("local[*]", EXPLICIT, tmp_path)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ("A", {"spark.executor.memory": "4g", "spark.executor.cores": "1", "spark.cores.max": "6"}),
        ("B", {"spark.executor.memory": "8g", "spark.executor.cores": "2", "spark.cores.max": "14"}),
        ("C", {"spark.executor.memory": "8g", "spark.executor.cores": "2", "spark.cores.max": "28"}),
    ],
)
def test_tiers_on_a_standalone_cluster(tier: str, expected: dict[str, str], tmp_path: Path) -> None:
    spec = SessionSpec(kind="pyspark", sc_type=tier)
    assert executor_conf("spark://head:7077", spec, tmp_path) == expected


def test_the_user_s_conf_wins_on_a_cluster(tmp_path: Path) -> None:
    spec = EXPLICIT.replace(conf={"spark.cores.max": "1", "spark.executor.memory": "512m"})
    assert executor_conf("spark://head:7077", spec, tmp_path) == {
        "spark.executor.memory": "512m",
        "spark.executor.cores": "2",
        "spark.cores.max": "1",
    }


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.1.1", "127.0.1.1"),
        ("::1", "::1"),
        ("localhost", "127.0.0.1"),
        ("10.0.0.5", "0.0.0.0"),
        ("edge-1.example.com", "0.0.0.0"),
    ],
)
def test_the_driver_listens_where_executors_reach_it(host: str, bind: str, tmp_path: Path) -> None:
    assert bind_address(host) == bind
    conf = spark_settings(EXPLICIT, "app", "spark://head:7077", tmp_path, driver_host=host)["conf"]
    assert (conf["spark.driver.host"], conf["spark.driver.bindAddress"]) == (host, bind)


def test_the_driver_is_on_the_loopback_by_default(tmp_path: Path) -> None:
    conf = spark_settings(EXPLICIT, "app", "yarn", tmp_path)["conf"]
    assert (conf["spark.driver.host"], conf["spark.driver.bindAddress"]) == ("127.0.0.1", "127.0.0.1")


def test_what_a_start_waits_for_is_said_as_asked(tmp_path: Path) -> None:
    assert executors_asked(spark_settings(EXPLICIT, "app", "yarn", tmp_path)) == "3 × 2g, 2 cores each"
    one = EXPLICIT.replace(executor_cores=1, executor_memory_mb=8192, num_executors=2)
    standalone = spark_settings(one, "app", "spark://head:7077", tmp_path)
    assert executors_asked(standalone) == "2 × 8g, 1 core each (spark.cores.max=2)"


@pytest.mark.parametrize(
    ("master", "conf", "expected"),
    [
        ("local[*]", {}, False),
        ("spark://head:7077", {}, True),
        ("yarn", {"spark.dynamicAllocation.enabled": "true"}, False),
        (
            "yarn",
            {"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.minExecutors": "1"},
            True,
        ),
        (
            "k8s://x",
            {"spark.dynamicAllocation.enabled": "TRUE", "spark.dynamicAllocation.initialExecutors": "2"},
            True,
        ),
        ("yarn", {"spark.dynamicAllocation.enabled": "false"}, True),
    ],
)
def test_which_starts_wait_for_an_executor(
    master: str, conf: dict[str, str], expected: bool, tmp_path: Path
) -> None:
    assert expects_executors(spark_settings(EXPLICIT.replace(conf=conf), "app", master, tmp_path)) is expected


def test_drivers_inherit_no_token_of_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_TOKEN_ENV, "server-secret")
    monkeypatch.setenv("DLI_KERNEL_TOKEN", "kernel-secret")
    monkeypatch.setenv("KEEP_ME", "yes")
    env = driver_env("/opt/python3")
    assert SERVER_TOKEN_ENV not in env and "DLI_KERNEL_TOKEN" not in env
    assert "server-secret" not in env.values() and "kernel-secret" not in env.values()
    assert env["KEEP_ME"] == "yes"


def test_a_proxy_user_is_hadoop_s_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HADOOP_USER_NAME", "operator")
    assert driver_env("/opt/python3", proxy_user="alice")["HADOOP_USER_NAME"] == "alice"
    # Without one, the driver acts as the server does.
    assert driver_env("/opt/python3")["HADOOP_USER_NAME"] == "operator"
    monkeypatch.delenv("HADOOP_USER_NAME")
    assert "HADOOP_USER_NAME" not in driver_env("/opt/python3")
