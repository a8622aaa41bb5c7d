"""Unit tests for dli_kernel.spec: parsing and validating session requests (no Spark, no network)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dli_kernel.spec import (
    KIND_ALIASES,
    KINDS,
    TIERS,
    Resources,
    SessionSpec,
    SpecError,
    format_duration,
    format_memory,
    normalize_kind,
    parse_duration,
    parse_memory,
    parse_positive_int,
    smallest_dlc_size,
    spark_memory,
)

LIVY_FIELDS = {
    "kind", "proxyUser", "jars", "pyFiles", "files", "driverMemory", "driverCores", "executorMemory",
    "executorCores", "numExecutors", "archives", "queue", "name", "conf", "heartbeatTimeoutInSecond", "ttl",
    "idleTimeout",
}  # fmt: skip
DLI_FIELDS = {
    "kind", "cluster_name", "sc_type", "jars", "pyFiles", "files", "modules", "resources", "groups", "conf",
    "name", "heartbeatTimeoutInSecond", "driverMemory", "driverCores", "executorMemory", "executorCores",
    "numExecutors",
}  # fmt: skip


def raises_spec_error(call, *args, **kwargs) -> str:
    """Run ``call``, demand a SpecError whose text is one sentence, and return that text."""
    with pytest.raises(SpecError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message.endswith("."), message
    assert "\n" not in message, message
    assert message[0].islower() or message[0] == "'", message  # starts like a field name, not "Error:"
    return message


# -- kinds ------------------------------------------------------------------------------------------


def test_every_kind_and_alias_makes_a_spec_of_its_kind():
    for kind in KINDS:
        assert SessionSpec(kind=kind).kind == kind
    for alias, kind in KIND_ALIASES.items():
        assert SessionSpec(kind=alias).kind == kind


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pyspark", "pyspark"),
        ("spark", "spark"),
        ("sql", "sql"),
        ("PySpark", "pyspark"),
        ("SQL", "sql"),
        ("python", "pyspark"),
        ("Python", "pyspark"),
        ("scala", "spark"),
        ("SCALA", "spark"),
        (" spark ", "spark"),
    ],
)
def test_normalize_kind_accepts_kinds_and_aliases(value, expected):
    assert normalize_kind(value) == expected


def test_normalize_kind_rejects_unknown_kind_with_the_documented_message():
    assert (
        raises_spec_error(normalize_kind, "sparkr")
        == "kind must be one of pyspark, spark, sql (got 'sparkr')."
    )


@pytest.mark.parametrize("value", ["", "shared", "r", None, 5, True, ["pyspark"]])
def test_normalize_kind_rejects_non_kinds(value):
    assert (
        raises_spec_error(normalize_kind, value)
        == f"kind must be one of pyspark, spark, sql (got {value!r})."
    )


def test_normalize_kind_names_the_given_field():
    assert raises_spec_error(normalize_kind, "java", "statement kind").startswith(
        "statement kind must be one of"
    )


# -- memory -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mb"),
    [
        ("2 GB", 2048),
        ("2GB", 2048),
        ("2gb", 2048),
        ("2 gb", 2048),
        ("2g", 2048),
        ("2G", 2048),
        ("2 GiB", 2048),
        ("2gib", 2048),
        ("2048 MB", 2048),
        ("2048MB", 2048),
        ("2048m", 2048),
        ("2048M", 2048),
        ("2048 MiB", 2048),
        ("512 mb", 512),
        ("1.5 GB", 1536),
        ("0.5g", 512),
        ("1 TB", 1024 * 1024),
        ("1t", 1024 * 1024),
        ("1 TiB", 1024 * 1024),
        ("1024k", 1),
        ("2048 KB", 2),
        ("4096 KiB", 4),
        ("1536k", 2),  # 1.5 MB rounds half up
        ("1048576b", 1),
        ("  7 GB  ", 7168),
        ("7  GB", 7168),
    ],
)
def test_parse_memory_accepts_sizes_with_units(value, mb):
    assert parse_memory(value, "driverMemory") == mb


def test_parse_memory_rejects_a_bare_number_with_the_documented_message():
    message = raises_spec_error(parse_memory, "2048", "driverMemory")
    assert (
        message == "driverMemory must be a size with a unit, such as '2 GB', '2048 MB' or '2g' (got '2048')."
    )


@pytest.mark.parametrize(
    "value",
    [
        2048,
        "2048",
        2.5,
        "1.5",
        "",
        "   ",
        "-2 GB",
        "-1g",
        "2 XB",
        "2 gigs",
        "GB",
        "abc",
        "2 G B",
        "1e3 MB",
        "1,5 GB",
        ".5 GB",
        "٢ GB",
        True,
        False,
        None,
        ["2 GB"],
        {"size": "2 GB"},
    ],
)
def test_parse_memory_rejects_anything_without_a_valid_unit(value):
    message = raises_spec_error(parse_memory, value, "executorMemory")
    assert message.startswith("executorMemory must be a size with a unit, such as '2 GB', '2048 MB' or '2g'")
    assert message.endswith(f"(got {value!r}).")


@pytest.mark.parametrize("value", ["0 GB", "0m", "0.0 GB", "2k", "511 KB", "100b"])
def test_parse_memory_rejects_sizes_below_one_megabyte(value):
    message = raises_spec_error(parse_memory, value, "driverMemory")
    assert (
        message == f"driverMemory must be at least 1 MB, such as '2 GB', '2048 MB' or '2g' (got {value!r})."
    )


@pytest.mark.parametrize(
    ("mb", "human", "spark"),
    [
        (7168, "7 GB", "7g"),
        (1024, "1 GB", "1g"),
        (2500, "2500 MB", "2500m"),
        (1, "1 MB", "1m"),
        (1536, "1536 MB", "1536m"),
        (1024 * 1024, "1024 GB", "1024g"),
    ],
)
def test_format_memory_and_spark_memory(mb, human, spark):
    assert format_memory(mb) == human
    assert spark_memory(mb) == spark
    assert parse_memory(human, "driverMemory") == mb
    assert parse_memory(spark, "driverMemory") == mb


# -- integers and durations -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (4, 4), (100, 100), ("4", 4), (" 16 ", 16)])
def test_parse_positive_int_accepts(value, expected):
    assert parse_positive_int(value, "driverCores") == expected


def test_parse_positive_int_rejects_zero_with_the_documented_message():
    assert (
        raises_spec_error(parse_positive_int, 0, "driverCores")
        == "driverCores must be a positive integer (got 0)."
    )


@pytest.mark.parametrize(
    "value", [0, -1, "0", "-3", "4.0", 4.0, 1.5, "", "four", "²", True, False, None, [4]]
)
def test_parse_positive_int_rejects(value):
    message = raises_spec_error(parse_positive_int, value, "numExecutors")
    assert message == f"numExecutors must be a positive integer (got {value!r})."


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("2d", 172800),
        ("10M", 600),
        ("1 h", 3600),
        ("600", 600),
        (600, 600),
        (1, 1),
    ],
)
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value, "ttl") == seconds


@pytest.mark.parametrize(
    "value", [0, -5, "0s", "0", "", "10 minutes", "1.5h", "10w", "-1m", "m", True, None, 2.0]
)
def test_parse_duration_rejects(value):
    message = raises_spec_error(parse_duration, value, "idleTimeout")
    assert message.startswith("idleTimeout must be a positive duration such as '30s', '10m', '1h', '2d'")
    assert message.endswith(f"(got {value!r}).")


@pytest.mark.parametrize(
    ("seconds", "text"), [(45, "45s"), (60, "1m"), (600, "10m"), (3600, "1h"), (5400, "90m"), (86400, "1d")]
)
def test_format_duration_uses_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text, "ttl") == seconds


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (-3, "0s"), (59.9, "59s"), (7620, "127m")])
def test_format_duration_of_what_the_magics_show(seconds, text):
    assert format_duration(seconds) == text


# -- tiers and resources ----------------------------------------------------------------------------


def test_tiers_match_table_5():
    assert SessionSpec().tier == "A"  # DLI's default when sc_type is not given
    assert sorted(TIERS) == ["A", "B", "C"]
    assert TIERS["A"] == Resources(
        driver_memory_mb=7168, driver_cores=2, executor_memory_mb=4096, executor_cores=1, num_executors=6
    )
    assert TIERS["B"] == Resources(
        driver_memory_mb=7168, driver_cores=2, executor_memory_mb=8192, executor_cores=2, num_executors=7
    )
    assert TIERS["C"] == Resources(
        driver_memory_mb=15360, driver_cores=4, executor_memory_mb=8192, executor_cores=2, num_executors=14
    )


@pytest.mark.parametrize("sc_type", [None, "A", "B", "C"])
def test_a_tier_alone_gives_its_table_resources(sc_type):
    spec = SessionSpec(sc_type=sc_type)
    assert spec.tier == (sc_type or "A")
    assert spec.effective_resources() == TIERS[sc_type or "A"]
    assert spec.customized is False
    assert spec.reported_sc_type == (sc_type or "A")


@pytest.mark.parametrize(("given", "stored"), [("a", "A"), ("b", "B"), ("C", "C"), (" c ", "C")])
def test_sc_type_is_case_insensitive_and_stored_upper(given, stored):
    assert SessionSpec(sc_type=given).sc_type == stored


@pytest.mark.parametrize("value", ["D", "", "AB", "CUSTOMIZED", 1, True])
def test_sc_type_rejects_unknown_tiers(value):
    assert raises_spec_error(SessionSpec, sc_type=value) == f"sc_type must be one of A, B, C (got {value!r})."


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ({"driver_memory_mb": 2048}, {"driver_memory_mb": 2048}),
        ({"driver_cores": 1}, {"driver_cores": 1}),
        ({"executor_memory_mb": 2500}, {"executor_memory_mb": 2500}),
        ({"executor_cores": 4}, {"executor_cores": 4}),
        ({"num_executors": 3}, {"num_executors": 3}),
    ],
)
def test_each_override_replaces_only_its_own_tier_value_and_makes_it_customized(override, changed):
    spec = SessionSpec(sc_type="C", **override)
    assert spec.effective_resources() == dataclasses.replace(TIERS["C"], **changed)
    assert spec.customized is True
    assert spec.reported_sc_type == "CUSTOMIZED"
    assert spec.tier == "C"


def test_overrides_apply_on_the_default_tier():
    spec = SessionSpec(executor_cores=3, num_executors=2)
    assert spec.effective_resources() == Resources(7168, 2, 4096, 3, 2)
    assert spec.reported_sc_type == "CUSTOMIZED"


# -- the constructor validates ----------------------------------------------------------------------


def test_defaults():
    spec = SessionSpec()
    assert spec.kind == "pyspark"
    assert spec.conf == {}
    assert spec.jars == ()
    assert spec.heartbeat_timeout_s == 0
    assert spec.name is None and spec.cluster_name is None and spec.ttl_s is None


def test_constructor_normalises_values():
    spec = SessionSpec(
        kind="Scala",
        sc_type="b",
        jars=["a.jar", "b.jar"],
        conf={"spark.x": 1, "spark.y": True, "spark.z": False, "spark.f": 0.5, "spark.s": "s"},
        resources=[{"name": "r.jar", "type": "jar"}],
        ttl_s="10m",
        driver_cores="2",
    )
    assert spec.kind == "spark"
    assert spec.sc_type == "B"
    assert spec.jars == ("a.jar", "b.jar")
    assert spec.conf == {
        "spark.x": "1",
        "spark.y": "true",
        "spark.z": "false",
        "spark.f": "0.5",
        "spark.s": "s",
    }
    assert spec.resources == ({"name": "r.jar", "type": "jar"},)
    assert spec.ttl_s == 600
    assert spec.driver_cores == 2


def test_constructor_copies_caller_objects():
    resource = {"name": "r.jar", "type": "jar"}
    conf = {"spark.a": "1"}
    group = {"name": "g", "resources": [{"name": "x.jar", "type": "jar"}]}
    spec = SessionSpec(resources=[resource], groups=[group], conf=conf)
    resource["name"] = "changed"
    group["resources"].append({"name": "y.jar", "type": "jar"})
    conf["spark.a"] = "2"
    assert spec.resources == ({"name": "r.jar", "type": "jar"},)
    assert spec.groups == ({"name": "g", "resources": [{"name": "x.jar", "type": "jar"}]},)
    assert spec.conf == {"spark.a": "1"}


def test_spec_is_frozen():
    spec = SessionSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kind = "sql"


def test_name_length_limit_is_128():
    assert SessionSpec(name="n" * 128).name == "n" * 128
    assert SessionSpec(name="x").name == "x"
    message = raises_spec_error(SessionSpec, name="n" * 129)
    assert message == "name must be a string of 1 to 128 characters (got a string of 129 characters)."


@pytest.mark.parametrize("value", ["", 5, ["n"]])
def test_name_rejects_empty_and_non_strings(value):
    assert raises_spec_error(SessionSpec, name=value) == (
        f"name must be a string of 1 to 128 characters (got {value!r})."
    )


@pytest.mark.parametrize(
    ("kwargs", "starts"),
    [
        ({"kind": None}, "kind must be one of pyspark, spark, sql (got None)."),
        ({"kind": "r"}, "kind must be one of"),
        ({"cluster_name": ""}, "cluster_name (queue) must be a non-empty string (got '')."),
        ({"cluster_name": 3}, "cluster_name (queue) must be a non-empty string (got 3)."),
        ({"proxy_user": ""}, "proxyUser must be a non-empty string (got '')."),
        ({"driver_memory_mb": 0}, "driverMemory (in MB) must be a positive integer (got 0)."),
        ({"driver_memory_mb": "2 GB"}, "driverMemory (in MB) must be a positive integer (got '2 GB')."),
        ({"executor_memory_mb": -1}, "executorMemory (in MB) must be a positive integer (got -1)."),
        ({"driver_cores": 0}, "driverCores must be a positive integer (got 0)."),
        ({"executor_cores": True}, "executorCores must be a positive integer (got True)."),
        ({"num_executors": 1.5}, "numExecutors must be a positive integer (got 1.5)."),
        (
            {"heartbeat_timeout_s": -1},
            "heartbeatTimeoutInSecond must be a whole number of seconds, 0 or more",
        ),
        ({"heartbeat_timeout_s": None}, "heartbeatTimeoutInSecond must be a whole number of seconds"),
        ({"heartbeat_timeout_s": True}, "heartbeatTimeoutInSecond must be a whole number of seconds"),
        ({"ttl_s": 0}, "ttl must be a positive duration"),
        ({"idle_timeout_s": "soon"}, "idleTimeout must be a positive duration"),
        ({"jars": "a.jar"}, "jars must be a list of non-empty strings (got 'a.jar')."),
        ({"py_files": [1]}, "pyFiles must be a list of non-empty strings (got [1])."),
        ({"files": [""]}, "files must be a list of non-empty strings (got [''])."),
        ({"archives": None}, "archives must be a list of non-empty strings (got None)."),
        ({"modules": {"m": 1}}, "modules must be a list of non-empty strings (got {'m': 1})."),
        ({"resources": ["r.jar"]}, "resources must be a list of JSON objects (got ['r.jar'])."),
        ({"groups": {"name": "g"}}, "groups must be a list of JSON objects (got {'name': 'g'})."),
        ({"conf": None}, "conf must be an object mapping non-empty setting names"),
        ({"conf": [("a", "b")]}, "conf must be an object mapping non-empty setting names"),
        ({"conf": {"": "x"}}, "conf must be an object mapping non-empty setting names"),
        ({"conf": {"a": None}}, "conf must be an object mapping non-empty setting names"),
        ({"conf": {"a": {"nested": 1}}}, "conf must be an object mapping non-empty setting names"),
        ({"conf": {"a": [1]}}, "conf must be an object mapping non-empty setting names"),
    ],
)
def test_constructor_rejects_bad_values_naming_the_wire_field(kwargs, starts):
    assert raises_spec_error(SessionSpec, **kwargs).startswith(starts)


def test_heartbeat_zero_means_off_and_positive_is_kept():
    assert SessionSpec(heartbeat_timeout_s=0).heartbeat_timeout_s == 0
    assert SessionSpec(heartbeat_timeout_s=60).heartbeat_timeout_s == 60


def test_replace_revalidates_and_normalises():
    spec = SessionSpec(name="a", sc_type="B")
    changed = spec.replace(kind="python", sc_type="c", num_executors=3)
    assert (changed.kind, changed.sc_type, changed.num_executors, changed.name) == ("pyspark", "C", 3, "a")
    assert spec.sc_type == "B"  # the original is untouched
    assert raises_spec_error(spec.replace, sc_type="Z") == "sc_type must be one of A, B, C (got 'Z')."
    assert raises_spec_error(spec.replace, name="").startswith("name must be a string of 1 to 128")


def test_persisted_spec_rebuilds_like_the_server_store_does():
    spec = SessionSpec.from_dli(
        {
            "kind": "sql",
            "cluster_name": "q",
            "jars": ["a.jar"],
            "conf": {"k": "v"},
            "driverMemory": "3g",
            "groups": [{"name": "g", "resources": [{"name": "x.jar", "type": "jar"}]}],
        }
    )
    record = json.loads(json.dumps(dataclasses.asdict(spec)))
    rebuilt = SessionSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})
    assert rebuilt == spec


# -- Livy bodies ------------------------------------------------------------------------------------


def test_from_livy_full_body():
    spec = SessionSpec.from_livy(
        {
            "kind": "spark",
            "proxyUser": "alice",
            "jars": ["a.jar"],
            "pyFiles": ["b.py"],
            "files": ["c.txt"],
            "driverMemory": "2g",
            "driverCores": 1,
            "executorMemory": "1536 MB",
            "executorCores": 2,
            "numExecutors": 3,
            "archives": ["d.zip"],
            "queue": "default",
            "name": "my session",
            "conf": {"spark.sql.shuffle.partitions": 8},
            "heartbeatTimeoutInSecond": 60,
            "ttl": "1h",
            "idleTimeout": "15m",
        }
    )
    assert spec == SessionSpec(
        kind="spark",
        proxy_user="alice",
        jars=("a.jar",),
        py_files=("b.py",),
        files=("c.txt",),
        driver_memory_mb=2048,
        driver_cores=1,
        executor_memory_mb=1536,
        executor_cores=2,
        num_executors=3,
        archives=("d.zip",),
        cluster_name="default",
        name="my session",
        conf={"spark.sql.shuffle.partitions": "8"},
        heartbeat_timeout_s=60,
        ttl_s=3600,
        idle_timeout_s=900,
    )


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({}, "pyspark"),
        ({"kind": "shared"}, "pyspark"),
        ({"kind": "Shared"}, "pyspark"),
        ({"kind": "sql"}, "sql"),
        ({"kind": "scala"}, "spark"),
        ({"kind": None}, "pyspark"),
    ],
)
def test_from_livy_kind_is_optional_and_shared_means_pyspark(body, kind):
    assert SessionSpec.from_livy(body) == SessionSpec(kind=kind)


def test_from_livy_treats_null_as_not_given():
    body = {"name": None, "driverMemory": None, "jars": None, "conf": None, "heartbeatTimeoutInSecond": None}
    assert SessionSpec.from_livy(body) == SessionSpec()


def test_from_livy_accepts_exactly_the_livy_fields():
    message = raises_spec_error(SessionSpec.from_livy, {"foo": 1})
    prefix = "unknown field 'foo'; accepted fields are: "
    assert message.startswith(prefix)
    listed = message[len(prefix) : -1].split(", ")
    assert listed == sorted(LIVY_FIELDS)


def test_from_livy_lists_every_unknown_field():
    message = raises_spec_error(SessionSpec.from_livy, {"zeta": 1, "alpha": 2, "kind": "spark"})
    assert message.startswith("unknown fields 'alpha', 'zeta'; accepted fields are: archives, conf,")


@pytest.mark.parametrize("field", sorted(DLI_FIELDS - LIVY_FIELDS))
def test_from_livy_rejects_dli_only_fields(field):
    assert raises_spec_error(SessionSpec.from_livy, {field: "x"}).startswith(f"unknown field '{field}';")


@pytest.mark.parametrize(
    ("body", "kind"),
    [([], "an array"), ("{}", "a string"), (None, "null"), (3, "a number"), (True, "a boolean")],
)
def test_bodies_must_be_json_objects(body, kind):
    expected = f"the request body must be a JSON object (got {kind})."
    assert raises_spec_error(SessionSpec.from_livy, body) == expected
    assert raises_spec_error(SessionSpec.from_dli, body) == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "sparkr"}, "kind"),
        ({"driverMemory": 2048}, "driverMemory"),
        ({"executorMemory": "4"}, "executorMemory"),
        ({"driverCores": 0}, "driverCores"),
        ({"executorCores": "x"}, "executorCores"),
        ({"numExecutors": -2}, "numExecutors"),
        ({"queue": ""}, "queue"),
        ({"name": "n" * 129}, "name"),
        ({"proxyUser": 7}, "proxyUser"),
        ({"jars": "a.jar"}, "jars"),
        ({"pyFiles": [None]}, "pyFiles"),
        ({"archives": [1]}, "archives"),
        ({"conf": ["spark.a=1"]}, "conf"),
        ({"heartbeatTimeoutInSecond": -1}, "heartbeatTimeoutInSecond"),
        ({"ttl": "0s"}, "ttl"),
        ({"idleTimeout": "forever"}, "idleTimeout"),
    ],
)
def test_from_livy_errors_name_the_wire_field(body, field):
    message = raises_spec_error(SessionSpec.from_livy, body)
    assert message.startswith(f"{field} ") or message.startswith(f"cluster_name ({field})"), message
    assert repr(body[field])[:40] in message or "129 characters" in message


def test_from_livy_gives_the_documented_memory_message():
    message = raises_spec_error(SessionSpec.from_livy, {"driverMemory": "2048"})
    assert (
        message == "driverMemory must be a size with a unit, such as '2 GB', '2048 MB' or '2g' (got '2048')."
    )


# -- DLI bodies -------------------------------------------------------------------------------------

DLI_DOC_EXAMPLE = {
    "kind": "spark",
    "cluster_name": "test_cluster",
    "sc_type": "A",
    "jars": ["group.tesddws/gsjdbc4.jar"],
    "resources": [{"name": "group.tesddws/gsjdbc3.jar", "type": "jar"}],
    "groups": [{"name": "group.tesddws", "resources": [{"name": "gsjdbc2.jar", "type": "jar"}]}],
}


def test_from_dli_parses_the_documented_example():
    spec = SessionSpec.from_dli(DLI_DOC_EXAMPLE)
    assert spec == SessionSpec(
        kind="spark",
        cluster_name="test_cluster",
        sc_type="A",
        jars=("group.tesddws/gsjdbc4.jar",),
        resources=({"name": "group.tesddws/gsjdbc3.jar", "type": "jar"},),
        groups=({"name": "group.tesddws", "resources": [{"name": "gsjdbc2.jar", "type": "jar"}]},),
    )
    assert spec.reported_sc_type == "A"
    assert spec.to_dli() == DLI_DOC_EXAMPLE


def test_from_dli_full_body():
    spec = SessionSpec.from_dli(
        {
            "kind": "pyspark",
            "cluster_name": "q1",
            "sc_type": "c",
            "jars": ["a.jar"],
            "pyFiles": ["b.py"],
            "files": ["c.txt"],
            "modules": ["sys.datasource.css"],
            "resources": [],
            "groups": [],
            "conf": {"spark.a": "1"},
            "name": "n",
            "heartbeatTimeoutInSecond": 120,
            "driverMemory": "15 GB",
            "driverCores": 4,
            "executorMemory": "8GB",
            "executorCores": 2,
            "numExecutors": 20,
        }
    )
    assert spec.sc_type == "C"
    assert spec.modules == ("sys.datasource.css",)
    assert spec.driver_memory_mb == 15360
    assert spec.executor_memory_mb == 8192
    assert spec.num_executors == 20
    assert spec.heartbeat_timeout_s == 120
    assert spec.effective_resources() == Resources(15360, 4, 8192, 2, 20)
    # Every size was given, even if all but one equal tier C's: DLI reports such a session as customised.
    assert spec.reported_sc_type == "CUSTOMIZED"


def test_from_dli_requires_cluster_name():
    for body in ({"kind": "spark"}, {"kind": "spark", "cluster_name": None}):
        message = raises_spec_error(SessionSpec.from_dli, body)
        assert message == "cluster_name is required: the name of the cluster (queue) to run the session on."


def test_from_dli_rejects_empty_cluster_name():
    message = raises_spec_error(SessionSpec.from_dli, {"kind": "spark", "cluster_name": ""})
    assert message == "cluster_name (queue) must be a non-empty string (got '')."


def test_from_dli_requires_kind():
    message = raises_spec_error(SessionSpec.from_dli, {"cluster_name": "q"})
    assert message == "kind is required: one of pyspark, spark, sql."


def test_from_dli_does_not_accept_livy_shared_kind():
    assert raises_spec_error(SessionSpec.from_dli, {"kind": "shared", "cluster_name": "q"}).startswith(
        "kind must be one of pyspark, spark, sql (got 'shared')"
    )


def test_from_dli_accepts_exactly_the_dli_fields():
    message = raises_spec_error(SessionSpec.from_dli, {"kind": "spark", "cluster_name": "q", "foo": 1})
    prefix = "unknown field 'foo'; accepted fields are: "
    assert message.startswith(prefix)
    assert message[len(prefix) : -1].split(", ") == sorted(DLI_FIELDS)


@pytest.mark.parametrize("field", sorted(LIVY_FIELDS - DLI_FIELDS))
def test_from_dli_rejects_livy_only_fields(field):
    body = {"kind": "spark", "cluster_name": "q", field: "x"}
    assert raises_spec_error(SessionSpec.from_dli, body).startswith(f"unknown field '{field}';")


@pytest.mark.parametrize(
    "conf",
    [
        {"spark.a": "1", "spark.b": 2},
        [{"key": "spark.a", "value": "1"}, {"key": "spark.b", "value": 2}],
        [{"spark.a": "1"}, {"spark.b": 2}],
        [{"key": "spark.a", "value": "1"}, {"spark.b": 2}],
    ],
)
def test_from_dli_conf_forms(conf):
    spec = SessionSpec.from_dli({"kind": "spark", "cluster_name": "q", "conf": conf})
    assert spec.conf == {"spark.a": "1", "spark.b": "2"}
    assert spec.to_dli()["conf"] == {"spark.a": "1", "spark.b": "2"}


def test_from_dli_conf_empty_list_is_empty_conf():
    assert SessionSpec.from_dli({"kind": "spark", "cluster_name": "q", "conf": []}).conf == {}


@pytest.mark.parametrize(
    "conf",
    [
        "spark.a=1",
        5,
        ["spark.a=1"],
        [{"key": "spark.a", "value": "1", "extra": 1}],
        [{"a": 1, "b": 2}],
        [{}],
        [["spark.a", "1"]],
    ],
)
def test_from_dli_rejects_other_conf_shapes(conf):
    message = raises_spec_error(SessionSpec.from_dli, {"kind": "spark", "cluster_name": "q", "conf": conf})
    assert message.startswith('conf must be an object {name: value}, a list of {"key": name, "value": value}')
    assert "single-entry objects" in message


def test_from_dli_conf_list_values_are_still_checked():
    body = {"kind": "spark", "cluster_name": "q", "conf": [{"key": "", "value": "1"}]}
    assert raises_spec_error(SessionSpec.from_dli, body).startswith("conf must be an object mapping")


@pytest.mark.parametrize(
    ("body", "start"),
    [
        ({"sc_type": "D"}, "sc_type must be one of A, B, C (got 'D')."),
        ({"modules": "m"}, "modules must be a list of non-empty strings (got 'm')."),
        ({"resources": [1]}, "resources must be a list of JSON objects (got [1])."),
        ({"groups": "g"}, "groups must be a list of JSON objects (got 'g')."),
        ({"heartbeatTimeoutInSecond": "-5"}, "heartbeatTimeoutInSecond must be a whole number of seconds"),
        ({"driverMemory": "2048"}, "driverMemory must be a size with a unit"),
        ({"numExecutors": 0}, "numExecutors must be a positive integer (got 0)."),
    ],
)
def test_from_dli_errors_name_the_wire_field(body, start):
    message = raises_spec_error(SessionSpec.from_dli, {"kind": "spark", "cluster_name": "q", **body})
    assert message.startswith(start)


# -- building wire bodies ---------------------------------------------------------------------------


def test_to_livy_omits_unset_fields():
    assert SessionSpec().to_livy() == {"kind": "pyspark"}
    assert SessionSpec(kind="sql", heartbeat_timeout_s=0).to_livy() == {"kind": "sql"}


def test_to_livy_uses_livy_names_and_wire_forms():
    spec = SessionSpec(
        kind="spark",
        name="n",
        cluster_name="q",
        driver_memory_mb=2500,
        executor_memory_mb=4096,
        executor_cores=2,
        conf={"a": "1"},
        py_files=("x.py",),
        archives=("y.zip",),
        heartbeat_timeout_s=90,
        proxy_user="bob",
        ttl_s=7200,
        idle_timeout_s=90,
    )
    assert spec.to_livy() == {
        "kind": "spark",
        "name": "n",
        "queue": "q",
        "driverMemory": "2500 MB",
        "executorMemory": "4 GB",
        "executorCores": 2,
        "conf": {"a": "1"},
        "pyFiles": ["x.py"],
        "archives": ["y.zip"],
        "heartbeatTimeoutInSecond": 90,
        "proxyUser": "bob",
        "ttl": "2h",
        "idleTimeout": "90s",
    }
    json.dumps(spec.to_livy())  # plain JSON types only


def test_to_livy_sends_a_tier_as_its_sizes():
    spec = SessionSpec(sc_type="B", num_executors=2)
    assert spec.to_livy() == {
        "kind": "pyspark",
        "driverMemory": "7 GB",
        "driverCores": 2,
        "executorMemory": "8 GB",
        "executorCores": 2,
        "numExecutors": 2,
    }
    assert SessionSpec.from_livy(spec.to_livy()).effective_resources() == spec.effective_resources()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"modules": ("m",)}, "modules"),
        ({"resources": ({"name": "r"},)}, "resources"),
        ({"groups": ({"name": "g"},)}, "groups"),
    ],
)
def test_to_livy_refuses_dli_only_fields(kwargs, field):
    message = raises_spec_error(SessionSpec(**kwargs).to_livy)
    assert message == f"{field} cannot be sent to Livy, which has no such field."


def test_to_dli_uses_dli_names_and_wire_forms():
    spec = SessionSpec(
        kind="sql",
        cluster_name="q",
        sc_type="b",
        name="n",
        executor_memory_mb=3072,
        driver_cores=1,
        conf={"a": "1"},
        modules=("m",),
        heartbeat_timeout_s=600,
    )
    assert spec.to_dli() == {
        "kind": "sql",
        "cluster_name": "q",
        "sc_type": "B",
        "name": "n",
        "executorMemory": "3 GB",
        "driverCores": 1,
        "conf": {"a": "1"},
        "modules": ["m"],
        "heartbeatTimeoutInSecond": 600,
    }


def test_to_dli_requires_cluster_name():
    message = raises_spec_error(SessionSpec(kind="spark").to_dli)
    assert message == "cluster_name is required: the name of the cluster (queue) to run the session on."


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"proxy_user": "u"}, "proxyUser"),
        ({"archives": ("a.zip",)}, "archives"),
        ({"ttl_s": 60}, "ttl"),
        ({"idle_timeout_s": 60}, "idleTimeout"),
    ],
)
def test_to_dli_refuses_livy_only_fields(kwargs, field):
    message = raises_spec_error(SessionSpec(cluster_name="q", **kwargs).to_dli)
    assert message == f"{field} cannot be sent to DLI, which has no such field."


def test_wire_bodies_do_not_share_state_with_the_spec():
    spec = SessionSpec(cluster_name="q", conf={"a": "1"}, groups=({"name": "g", "resources": []},))
    body = spec.to_dli()
    body["conf"]["a"] = "2"
    body["groups"][0]["name"] = "changed"
    body["groups"][0]["resources"].append("x")
    assert spec.conf == {"a": "1"}
    assert spec.groups == ({"name": "g", "resources": []},)


# -- round trips ------------------------------------------------------------------------------------

LIVY_SPECS = [
    SessionSpec(),
    SessionSpec(kind="sql", name="n" * 128),
    SessionSpec(
        kind="spark",
        cluster_name="q",
        driver_memory_mb=2500,
        driver_cores=3,
        executor_memory_mb=1024,
        executor_cores=1,
        num_executors=9,
    ),
    SessionSpec(
        jars=("a.jar", "b.jar"),
        py_files=("c.py",),
        files=("d",),
        archives=("e.zip#env",),
        conf={"spark.a": "1", "spark.b": "true"},
        heartbeat_timeout_s=75,
        proxy_user="u",
        ttl_s=3600,
        idle_timeout_s=61,
    ),
]
DLI_SPECS = [
    SessionSpec(kind="spark", cluster_name="q"),
    SessionSpec(kind="sql", cluster_name="q", sc_type="C", name="x"),
    SessionSpec(
        kind="pyspark",
        cluster_name="q",
        sc_type="B",
        driver_memory_mb=1536,
        num_executors=2,
        conf={"k": "v"},
        modules=("m1", "m2"),
        resources=({"name": "r.jar", "type": "jar"},),
        groups=({"name": "g", "resources": [{"name": "x.jar", "type": "jar"}]},),
        heartbeat_timeout_s=300,
        jars=("j",),
        py_files=("p",),
        files=("f",),
    ),
]


@pytest.mark.parametrize("spec", LIVY_SPECS)
def test_livy_round_trip(spec):
    body = spec.to_livy()
    assert SessionSpec.from_livy(json.loads(json.dumps(body))) == spec


@pytest.mark.parametrize("spec", DLI_SPECS)
def test_dli_round_trip(spec):
    body = spec.to_dli()
    assert SessionSpec.from_dli(json.loads(json.dumps(body))) == spec


def test_livy_body_round_trip_from_the_wire():
    body = {"kind": "spark", "queue": "q", "driverMemory": "2 GB", "conf": {"a": "b"}, "ttl": "10m"}
    assert SessionSpec.from_livy(body).to_livy() == body


def test_repr_leaves_conf_values_out() -> None:
    spec = SessionSpec(conf={"spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(spec) and spec.conf["spark.hadoop.fs.s3a.secret.key"] == "s3cr3t-value"


@pytest.mark.parametrize(
    ("cores", "memory_mb", "size"),
    [
        (1, 1, "small"),
        (1, 4096, "small"),
        (1, 4097, "medium"),
        (2, 1024, "medium"),
        (3, 1024, "large"),
        (4, 16 * 1024, "large"),
        (8, 32 * 1024, "xlarge"),
        (9, 1024, None),
        (1, 32 * 1024 + 1, None),
    ],
)
def test_the_smallest_dlc_size_holds_cores_and_memory(cores: int, memory_mb: int, size: str | None) -> None:
    assert smallest_dlc_size(cores, memory_mb) == size


def test_each_tier_has_a_dlc_size() -> None:
    sizes = {
        name: (
            smallest_dlc_size(tier.driver_cores, tier.driver_memory_mb),
            smallest_dlc_size(tier.executor_cores, tier.executor_memory_mb),
        )
        for name, tier in TIERS.items()
    }
    assert sizes == {"A": ("medium", "small"), "B": ("medium", "medium"), "C": ("large", "medium")}
