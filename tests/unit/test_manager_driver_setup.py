"""What a driver is started with and sent: Spark settings from a spec, and the code snippets (no driver)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from dli_kernel.protocol import SERVER_TOKEN_ENV
from dli_kernel.server import driver_code
from dli_kernel.server.records import Statement
from dli_kernel.server.spark_conf import driver_env, spark_settings
from dli_kernel.server.worker import code_for
from dli_kernel.spec import SessionSpec


def test_spark_settings_of_a_tier_with_overrides(tmp_path: Path) -> None:
    spec = SessionSpec(
        kind="pyspark",
        sc_type="B",
        driver_memory_mb=2500,
        num_executors=3,
        conf={"spark.sql.shuffle.partitions": "8", "spark.driver.host": "0.0.0.0"},
        jars=("a.jar", "b.jar"),
        archives=("env.zip#env",),
    )
    settings = spark_settings(spec, "nightly", "local[*]", tmp_path)
    assert settings["master"] == "local[6]"  # B: 2 cores per executor, times 3 executors
    assert settings["app_name"] == "nightly"
    conf = settings["conf"]
    assert conf["spark.driver.memory"] == "2500m"
    assert conf["spark.executor.memory"] == "8g"
    assert (conf["spark.executor.cores"], conf["spark.executor.instances"]) == ("2", "3")
    assert conf["spark.jars"] == "a.jar,b.jar"
    assert conf["spark.archives"] == "env.zip#env"
    assert "spark.files" not in conf and "spark.submit.pyFiles" not in conf
    assert conf["spark.sql.shuffle.partitions"] == "8"
    assert conf["spark.driver.host"] == "0.0.0.0"  # the user's conf wins over ours
    assert conf["spark.sql.warehouse.dir"] == str(tmp_path / "warehouse")


def test_a_cluster_master_is_kept(tmp_path: Path) -> None:
    settings = spark_settings(SessionSpec(kind="sql"), "x", "spark://head:7077", tmp_path)
    assert settings["master"] == "spark://head:7077"


def test_driver_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_PARENT_PID", "123")
    monkeypatch.setenv(SERVER_TOKEN_ENV, "not-for-drivers")
    env = driver_env("/opt/python3")
    assert (env["PYSPARK_PYTHON"], env["PYSPARK_DRIVER_PYTHON"]) == ("/opt/python3", "/opt/python3")
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert "JPY_PARENT_PID" not in env
    assert SERVER_TOKEN_ENV not in env


HOSTILE = "x'); import os; os.system('echo pwned'); ('\"\\\n"


def call_of(code: str) -> ast.Call:
    (statement,) = ast.parse(code).body[-1:]
    assert isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
    return statement.value


def test_sql_reaches_the_driver_as_one_string_literal() -> None:
    call = call_of(code_for(Statement(id=0, code=HOSTILE, kind="sql", max_rows=7)))
    assert ast.unparse(call.func) == "_dli.run_sql"
    assert [ast.literal_eval(arg) for arg in call.args] == [HOSTILE]
    assert [(k.arg, ast.literal_eval(k.value)) for k in call.keywords] == [("max_rows", 7)]


def test_an_arrow_statement_names_its_result_file() -> None:
    statement = Statement(id=4, code=HOSTILE, kind="pyspark", max_rows=-1, result_format="arrow")
    code = code_for(statement)
    assert code.startswith("import dli_kernel.driver.arrow_results as _dli_arrow\n")
    call = call_of(code)
    assert [ast.literal_eval(arg) for arg in call.args] == [HOSTILE, "pyspark"]
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == {
        "max_rows": -1,
        "path": "results/4.arrow",
    }


def test_python_code_is_sent_as_it_is() -> None:
    assert code_for(Statement(id=0, code="print(1)", kind="pyspark")) == "print(1)"


def test_bootstrap_carries_the_settings_as_one_json_literal() -> None:
    settings = {"master": "local[1]", "app_name": HOSTILE, "conf": {"k": HOSTILE}}
    call = call_of(driver_code.bootstrap(settings))
    assert ast.unparse(call.func) == "_dli.bootstrap"
    assert json.loads(ast.literal_eval(call.args[0])) == settings


def test_the_executor_count_is_one_call_of_the_runtime() -> None:
    call = call_of(driver_code.executor_count())
    assert ast.unparse(call) == "_dli.executor_count()"
