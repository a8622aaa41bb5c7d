"""Unit tests for dli_kernel.config: the config file, the environment, and the Endpoint they give.

The load_settings tests use tmp_path config files and explicit env dicts (never os.environ).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.auth import HTTPBasicAuth

from dli_kernel.client import ConfigError, SessionsClient
from dli_kernel.client.auth import BearerToken, HuaweiAkSk, IamToken
from dli_kernel.config import (
    CONFIG_FILE_NAME,
    DEFAULT_HEARTBEAT_S,
    Endpoint,
    Settings,
    default_config_file,
    load_settings,
)

TOKEN = "tok-SECRET-1234"
SK = "sk-SECRET-5678"
PASSWORD = "pw-SECRET-9012"
SECRETS = (TOKEN, SK, PASSWORD)


@pytest.fixture
def config(tmp_path: Path):
    """Write a config file (a dict as JSON, or raw text) and return its path."""
    path = tmp_path / CONFIG_FILE_NAME

    def write(content: dict[str, Any] | str) -> Path:
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1))
        return path

    return write


@pytest.fixture
def missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere" / CONFIG_FILE_NAME


def headers_sent(auth: Any, url: str = "http://h.example.com/sessions") -> dict[str, str]:
    request = requests.Request("GET", url, auth=auth).prepare()
    return dict(request.headers)


# -- sources and precedence -------------------------------------------------------------------------


def test_nothing_configured_means_the_embedded_server_and_plain_defaults(missing: Path) -> None:
    settings = load_settings(env={}, config_file=missing)
    assert isinstance(settings, Settings)
    assert settings.endpoint is None
    assert settings.defaults.kind == "pyspark"
    assert settings.defaults.heartbeat_timeout_s == DEFAULT_HEARTBEAT_S == 120
    assert settings.defaults.sc_type is None and settings.defaults.cluster_name is None
    assert "built-in defaults" in settings.source and str(missing) in settings.source


def test_blank_file_and_empty_variables_count_as_unset(config) -> None:
    path = config("  \n")
    settings = load_settings(env={"DLI_KERNEL_URL": "", "DLI_KERNEL_DIALECT": "  "}, config_file=path)
    assert settings.endpoint is None
    assert "is empty" in settings.source


def test_default_config_file_is_in_the_jupyter_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    assert default_config_file() == tmp_path / "dli_kernel.json"
    (tmp_path / "dli_kernel.json").write_text(json.dumps({"url": "http://livy.example.com:8998"}))
    settings = load_settings(env={})
    assert settings.endpoint is not None and settings.endpoint.url == "http://livy.example.com:8998"


def test_environment_wins_over_the_file_field_by_field(config) -> None:
    path = config(
        {
            "url": "http://file.example.com:8998",
            "dialect": "livy",
            "token": TOKEN,
            "headers": {"X-Requested-By": "me"},
            "session": {"cluster_name": "file_queue", "sc_type": "A", "driverMemory": "2g"},
        }
    )
    env = {
        "DLI_KERNEL_URL": "http://env.example.com:8998/",
        "DLI_KERNEL_CLUSTER": "env_queue",
        "DLI_KERNEL_SC_TYPE": "c",
        "DLI_KERNEL_KIND": "scala",
        "UNRELATED": "x",
    }
    settings = load_settings(env=env, config_file=path)
    endpoint = settings.endpoint
    assert endpoint is not None
    assert endpoint.url == "http://env.example.com:8998"  # env; trailing slash dropped
    assert endpoint.dialect == "livy"  # file
    assert isinstance(endpoint.auth, BearerToken)  # the file's token
    assert endpoint.headers == {"X-Requested-By": "me"}
    defaults = settings.defaults
    assert (defaults.cluster_name, defaults.sc_type, defaults.kind) == ("env_queue", "C", "spark")
    assert defaults.driver_memory_mb == 2048  # file, not overridden
    # The source names what was used, never a value.
    assert "DLI_KERNEL_URL" in settings.source and "DLI_KERNEL_CLUSTER" in settings.source
    assert str(path) in settings.source and "token" in settings.source
    assert "UNRELATED" not in settings.source and TOKEN not in settings.source


def test_dli_settings_from_the_environment_alone(missing: Path) -> None:
    env = {
        "DLI_KERNEL_URL": "https://dli.cn-north-4.myhuaweicloud.com",
        "DLI_KERNEL_DIALECT": "DLI",
        "DLI_KERNEL_PROJECT_ID": "0123abcd",
        "HUAWEICLOUD_SDK_PROJECT_ID": "not-this-one",
        "DLI_KERNEL_TOKEN": TOKEN,
    }
    endpoint = load_settings(env=env, config_file=missing).endpoint
    assert endpoint is not None
    assert (endpoint.dialect, endpoint.project_id) == ("dli", "0123abcd")
    del env["DLI_KERNEL_PROJECT_ID"]  # the SDK's own variable is the fallback
    assert load_settings(env=env, config_file=missing).endpoint.project_id == "not-this-one"


def test_a_url_without_a_dialect_is_livy(missing: Path) -> None:
    endpoint = load_settings(env={"DLI_KERNEL_URL": "http://livy:8998"}, config_file=missing).endpoint
    assert endpoint == Endpoint("http://livy:8998", "livy")
    assert endpoint.auth is None and not endpoint.embedded


def test_the_local_dialect_without_a_url_is_the_embedded_server(missing: Path) -> None:
    assert load_settings(env={"DLI_KERNEL_DIALECT": "local"}, config_file=missing).endpoint is None


# -- auth inference ---------------------------------------------------------------------------------

DLI = {"url": "https://dli.example.com", "dialect": "dli", "project_id": "p1"}
LIVY = {"url": "http://livy.example.com:8998"}
AKSK_ENV = {"HUAWEICLOUD_SDK_AK": "AKID0123", "HUAWEICLOUD_SDK_SK": SK}


@pytest.mark.parametrize(
    ("file", "env", "expected", "header"),
    [
        (DLI, AKSK_ENV, HuaweiAkSk, "Authorization"),
        (DLI, {**AKSK_ENV, "DLI_KERNEL_TOKEN": TOKEN}, HuaweiAkSk, "Authorization"),  # AK/SK first
        ({**DLI, "ak": "AKID0123", "sk": SK}, {}, HuaweiAkSk, "Authorization"),
        (DLI, {"DLI_KERNEL_TOKEN": TOKEN}, IamToken, "X-Auth-Token"),
        (LIVY, {"DLI_KERNEL_TOKEN": TOKEN}, BearerToken, "Authorization"),
        ({**LIVY, "dialect": "local", "token": TOKEN}, {}, BearerToken, "Authorization"),
        ({**LIVY, "username": "ann", "password": PASSWORD}, {}, HTTPBasicAuth, "Authorization"),
        (LIVY, {}, type(None), None),
        # The SDK's variables are often set for other tools: they never sign a Livy endpoint's requests.
        (LIVY, AKSK_ENV, type(None), None),
    ],
)
def test_auth_inference(config, file: dict, env: dict, expected: type, header: str | None) -> None:
    endpoint = load_settings(env=env, config_file=config(file)).endpoint
    assert type(endpoint.auth) is expected or isinstance(endpoint.auth, expected)
    if header is not None:
        assert header in headers_sent(endpoint.auth)
    for secret in SECRETS:
        assert secret not in repr(endpoint) and secret not in str(endpoint)


def test_aksk_carries_the_project_id_and_the_sdk_security_token(config) -> None:
    env = {**AKSK_ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": "sts-SECRET"}
    endpoint = load_settings(env=env, config_file=config(DLI)).endpoint
    sent = headers_sent(endpoint.auth)
    assert sent["X-Project-Id"] == "p1"
    assert sent["X-Security-Token"] == "sts-SECRET"
    assert sent["Authorization"].startswith("SDK-HMAC-SHA256 Access=AKID0123, ")
    assert "sts-SECRET" not in repr(endpoint)
    assert "HUAWEICLOUD_SDK_SECURITY_TOKEN" in load_settings(env=env, config_file=config(DLI)).source


@pytest.mark.parametrize(
    ("scheme", "extra", "expected", "header", "value"),
    [
        ("bearer", {"token": TOKEN}, BearerToken, "Authorization", f"Bearer {TOKEN}"),
        ("iam", {"token": TOKEN}, IamToken, "X-Auth-Token", TOKEN),
        ("basic", {"username": "ann", "password": PASSWORD}, HTTPBasicAuth, "Authorization", None),
        ("aksk", {"ak": "AKID0123", "sk": SK, "project_id": "p9"}, HuaweiAkSk, "X-Project-Id", "p9"),
        ("none", {"token": TOKEN, "username": "ann", "password": PASSWORD}, type(None), None, None),
        ("IAM", {"token": TOKEN}, IamToken, "X-Auth-Token", TOKEN),
    ],
)
def test_explicit_auth(config, scheme: str, extra: dict, expected: type, header: str, value: str) -> None:
    # An explicit scheme wins over inference, on any dialect (here Livy, where a token would be bearer).
    endpoint = load_settings(env={}, config_file=config({**LIVY, "auth": scheme, **extra})).endpoint
    assert type(endpoint.auth) is expected or isinstance(endpoint.auth, expected)
    if header is not None:
        sent = headers_sent(endpoint.auth)
        assert header in sent
        if value is not None:
            assert sent[header] == value


def test_basic_auth_sends_the_credentials_and_hides_the_password(config) -> None:
    endpoint = load_settings(
        env={}, config_file=config({**LIVY, "username": "ann", "password": PASSWORD})
    ).endpoint
    assert endpoint.auth == HTTPBasicAuth("ann", PASSWORD)
    assert headers_sent(endpoint.auth)["Authorization"].startswith("Basic ")
    assert repr(endpoint.auth) == "HTTPBasicAuth(username='ann', password=***)"


# -- session defaults -------------------------------------------------------------------------------


def test_session_defaults_from_the_file(config) -> None:
    path = config(
        {
            "session": {
                "kind": "python",
                "cluster_name": "q1",
                "sc_type": "b",
                "driverMemory": "2 GB",
                "driverCores": "2",
                "executorMemory": "4g",
                "executorCores": 2,
                "numExecutors": 3,
                "conf": [{"key": "spark.sql.shuffle.partitions", "value": 64}, {"spark.x": True}],
                "heartbeatTimeoutInSecond": 300,
                "name": "nightly",
                "jars": ["obs://b/a.jar"],
                "modules": None,  # null means not given
            }
        }
    )
    settings = load_settings(env={}, config_file=path)
    assert settings.endpoint is None  # session defaults alone do not configure an endpoint
    spec = settings.defaults
    assert (spec.kind, spec.cluster_name, spec.sc_type, spec.name) == ("pyspark", "q1", "B", "nightly")
    assert (spec.driver_memory_mb, spec.driver_cores) == (2048, 2)
    assert (spec.executor_memory_mb, spec.executor_cores, spec.num_executors) == (4096, 2, 3)
    assert spec.conf == {"spark.sql.shuffle.partitions": "64", "spark.x": "true"}
    assert spec.heartbeat_timeout_s == 300
    assert spec.jars == ("obs://b/a.jar",) and spec.modules == ()
    assert spec.effective_resources().num_executors == 3
    assert "session" in settings.source


def test_livy_field_names_work_too_and_a_heartbeat_of_zero_stays_zero(config) -> None:
    path = config(
        {"session": {"queue": "root.etl", "proxyUser": "ann", "ttl": "1h", "heartbeatTimeoutInSecond": 0}}
    )
    spec = load_settings(env={}, config_file=path).defaults
    assert (spec.cluster_name, spec.proxy_user, spec.ttl_s) == ("root.etl", "ann", 3600)
    assert spec.heartbeat_timeout_s == 0
    assert spec.to_livy()["queue"] == "root.etl"


def test_session_defaults_from_the_environment_alone(missing: Path) -> None:
    env = {"DLI_KERNEL_KIND": "sql", "DLI_KERNEL_CLUSTER": "q2", "DLI_KERNEL_SC_TYPE": "a"}
    spec = load_settings(env=env, config_file=missing).defaults
    assert (spec.kind, spec.cluster_name, spec.sc_type, spec.heartbeat_timeout_s) == ("sql", "q2", "A", 120)


# -- errors: one sentence, names the file or variable, never a secret -------------------------------

P = "<path>"  # replaced by the config file's path


def _cases() -> list[tuple[str, dict | str | None, dict, list[str]]]:
    """(id, file content or None for no file, env, fragments the message must contain)."""
    return [
        (
            "env dialect",
            None,
            {"DLI_KERNEL_DIALECT": "yarn"},
            ["DLI_KERNEL_DIALECT must be one of livy, dli, dlc, local (got 'yarn')."],
        ),
        ("file dialect", {"dialect": "yarn"}, {}, [f"{P}: dialect must be one of livy, dli, dlc, local"]),
        (
            "invalid json",
            '{\n "url": "http://livy:8998"\n    "dialect": "livy"\n}',
            {},
            [f"{P} is not valid JSON: Expecting ',' delimiter at line 3 column 5."],
        ),
        (
            "invalid json near a secret",
            '{"token": "' + TOKEN + '" "sk": "' + SK + '"}',
            {},
            [f"{P} is not valid JSON"],
        ),
        ("not an object", "[1, 2]", {}, [f"{P} must hold a JSON object", "(got an array)"]),
        ("unknown key", {"urll": "http://x"}, {}, [f"{P} has unknown key 'urll'", "accepted keys are: url"]),
        ("env url", None, {"DLI_KERNEL_URL": "livy:8998"}, ["DLI_KERNEL_URL must be an http:// or https://"]),
        (
            "url with a password",
            None,
            {"DLI_KERNEL_URL": f"ftp://ann:{PASSWORD}@h"},
            ["DLI_KERNEL_URL must be", "'ftp://***@h'"],
        ),
        ("file url type", {"url": 8998}, {}, [f"{P}: url must be an http://", "(got a number)"]),
        (
            "dli without project",
            {"url": "https://dli.example.com", "dialect": "dli"},
            {"DLI_KERNEL_TOKEN": TOKEN},
            ["dialect dli needs a project id", "DLI_KERNEL_PROJECT_ID", f"project_id in {P}"],
        ),
        (
            "bad project id",
            None,
            {"DLI_KERNEL_URL": "https://d", "DLI_KERNEL_DIALECT": "dli", "DLI_KERNEL_PROJECT_ID": "a/b"},
            ["DLI_KERNEL_PROJECT_ID must be a project id"],
        ),
        (
            "dialect without url",
            {"dialect": "dli", "project_id": "p"},
            {},
            [f"{P}: dialect is 'dli' but no URL is set", "DLI_KERNEL_URL"],
        ),
        (
            "token with a space",
            None,
            {"DLI_KERNEL_URL": "http://livy", "DLI_KERNEL_TOKEN": f"{TOKEN} x"},
            ["DLI_KERNEL_TOKEN must be a non-empty string of printable ASCII"],
        ),
        (
            "token not a string",
            {**LIVY, "token": 123456789},
            {},
            [f"{P}: token must be a non-empty string"],
        ),
        (
            "ak without sk",
            DLI,
            {"HUAWEICLOUD_SDK_AK": "AKID0123"},
            ["needs sk", "HUAWEICLOUD_SDK_SK", f"sk in {P}"],
        ),
        (
            "sk not ascii",
            DLI,
            {"HUAWEICLOUD_SDK_AK": "AKID0123", "HUAWEICLOUD_SDK_SK": SK + "é"},
            ["HUAWEICLOUD_SDK_SK must be a non-empty string"],
        ),
        (
            "password not latin-1",
            {**LIVY, "username": "ann", "password": PASSWORD + "中"},
            {},
            [f"{P}: password must be a non-empty string of Latin-1"],
        ),
        (
            "username without password",
            {**LIVY, "username": "ann"},
            {},
            ["HTTP Basic auth", "needs password", f"password in {P}"],
        ),
        (
            "unknown auth",
            {**LIVY, "auth": "kerberos", "token": TOKEN},
            {},
            [f"{P}: auth must be one of bearer, iam, basic, aksk, tc3, none (got 'kerberos')."],
        ),
        (
            "bearer without token",
            {**LIVY, "auth": "bearer"},
            {},
            [f"auth 'bearer' in {P} needs token", "DLI_KERNEL_TOKEN"],
        ),
        (
            "aksk without ak",
            {**LIVY, "auth": "aksk", "sk": SK},
            {},
            [f"auth 'aksk' in {P} needs ak", "HUAWEICLOUD_SDK_AK"],
        ),
        (
            "headers",
            {**LIVY, "headers": {"X-Api-Key": 42, "X-Secret": TOKEN}},
            {},
            [f"{P}: headers must be an object mapping header names to string values"],
        ),
        ("session type", {"session": ["pyspark"]}, {}, [f"{P}: session must be a JSON object"]),
        (
            "session memory",
            {"session": {"driverMemory": "2048"}},
            {},
            [f"{P}: session.driverMemory must be a size with a unit"],
        ),
        (
            "session unknown field",
            {"session": {"driverMem": "2g"}},
            {},
            [f"{P}: session has unknown field 'driverMem'", "accepted fields are:"],
        ),
        (
            "session conf with a secret",
            {"session": {"conf": {"spark.hadoop.fs.s3a.secret.key": SK, "spark.bad": {"a": TOKEN}}}},
            {},
            [f"{P}: session.conf must be an object", "('spark.bad' is an object)"],
        ),
        (
            "session heartbeat",
            {"session": {"heartbeatTimeoutInSecond": -5}},
            {},
            [f"{P}: session.heartbeatTimeoutInSecond must be a whole number of seconds"],
        ),
        (
            "session queue twice",
            {"session": {"cluster_name": "a", "queue": "b"}},
            {},
            [f"{P}: session.cluster_name and session.queue are the same setting"],
        ),
        ("env kind", None, {"DLI_KERNEL_KIND": "r"}, ["DLI_KERNEL_KIND must be one of pyspark, spark, sql"]),
        ("env sc_type", None, {"DLI_KERNEL_SC_TYPE": "D"}, ["DLI_KERNEL_SC_TYPE must be one of A, B, C"]),
    ]


@pytest.mark.parametrize(
    ("content", "env", "fragments"), [c[1:] for c in _cases()], ids=[c[0] for c in _cases()]
)
def test_config_errors(tmp_path: Path, content: dict | str | None, env: dict, fragments: list[str]) -> None:
    path = tmp_path / CONFIG_FILE_NAME
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, config_file=path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment.replace(P, str(path)) in message
    assert_one_sentence(message)
    for secret in SECRETS:
        assert secret not in message


def assert_one_sentence(message: str) -> None:
    assert message.endswith("."), message
    assert "\n" not in message, message
    assert not re.search(r"\.\s+[A-Z]", message), message  # no second sentence


def test_an_unreadable_config_file(tmp_path: Path) -> None:
    directory = tmp_path / CONFIG_FILE_NAME
    directory.mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_file=directory)
    assert str(info.value) == f"{directory} cannot be read: Is a directory."


def test_a_config_file_that_is_not_utf8(config) -> None:
    path = config("")
    path.write_bytes(b'{"url": "http://h\xff"}')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(env={}, config_file=path)


# -- Endpoint ---------------------------------------------------------------------------------------


def test_endpoint_repr_shows_no_secret() -> None:
    endpoints = [
        Endpoint("http://h:1", "local", auth=BearerToken(TOKEN), embedded=True),
        Endpoint("https://d", "dli", project_id="p", auth=IamToken(TOKEN)),
        Endpoint("https://d", "dli", project_id="p", auth=HuaweiAkSk("AKID0123", SK, "p", TOKEN)),
        Endpoint(f"http://ann:{PASSWORD}@livy:8998", "livy", headers={"X-Api-Key": TOKEN}),
    ]
    for endpoint in endpoints:
        for text in (repr(endpoint), str(endpoint), repr(Settings(endpoint, load_defaults(), "here"))):
            for secret in SECRETS:
                assert secret not in text, text
    assert "X-Api-Key" in repr(endpoints[-1]) and "livy:8998" in repr(endpoints[-1])


def load_defaults() -> Any:
    return load_settings(env={}, config_file=Path("/nonexistent") / CONFIG_FILE_NAME).defaults


def test_endpoint_copies_headers_and_checks_the_dialect() -> None:
    headers = {"X-Requested-By": "me"}
    endpoint = Endpoint("http://livy", "livy", headers=headers)
    headers["X-Other"] = "changed"
    assert endpoint.headers == {"X-Requested-By": "me"}
    assert hash(endpoint) == hash(Endpoint("http://livy", "livy", headers={"X": "y"}))
    with pytest.raises(ConfigError, match=r"dialect must be one of livy, dli, dlc, local \(got 'yarn'\)\."):
        Endpoint("http://livy", "yarn")


@pytest.mark.parametrize(
    ("endpoint", "prefix"),
    [
        (Endpoint("http://livy:8998/", "livy", headers={"X-Requested-By": "ann"}), ""),
        (Endpoint("https://dli.example.com", "dli", project_id="p1", auth=IamToken(TOKEN)), "/v2.0/p1"),
        (Endpoint("http://127.0.0.1:1", "local", auth=BearerToken(TOKEN), embedded=True), "/v2.0/local"),
    ],
)
def test_endpoint_client(endpoint: Endpoint, prefix: str) -> None:
    with endpoint.client(timeout=(1.0, 2.0), retry_delays=()) as client:
        assert isinstance(client, SessionsClient)
        assert client.dialect.name == endpoint.dialect and client.dialect.prefix == prefix
        assert client.url == endpoint.url.rstrip("/")
        assert client.timeout == (1.0, 2.0)
        assert client._http.auth is endpoint.auth
        for name, value in endpoint.headers.items():
            assert client._http.headers[name] == value
    with endpoint.client() as other:
        assert other is not client


# -- Tencent Cloud DLC ------------------------------------------------------------------------------

DLC_ENV = {
    "DLI_KERNEL_URL": "https://dlc.tencentcloudapi.com",
    "DLI_KERNEL_DIALECT": "dlc",
    "DLI_KERNEL_REGION": "ap-guangzhou",
    "TENCENTCLOUD_SECRET_ID": "AKIDdlc0123",
    "TENCENTCLOUD_SECRET_KEY": SK,
    "TENCENTCLOUD_SESSION_TOKEN": TOKEN,
}


@pytest.fixture
def no_tencent_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home without ~/.tencentcloud/credentials (the SDK's profile file), unless a test writes one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_dlc_from_the_environment_signs_with_the_sdk_credential(
    missing: Path, no_tencent_profile: Path
) -> None:
    from dli_kernel.client.tc3 import TencentTC3

    settings = load_settings(env=DLC_ENV, config_file=missing)
    endpoint = settings.endpoint
    assert endpoint is not None
    assert (endpoint.url, endpoint.dialect, endpoint.region) == (
        "https://dlc.tencentcloudapi.com",
        "dlc",
        "ap-guangzhou",
    )
    assert isinstance(endpoint.auth, TencentTC3)
    sent = requests.Request("POST", endpoint.url + "/", json={}, auth=endpoint.auth).prepare().headers
    assert sent["X-TC-Token"] == TOKEN and "Credential=AKIDdlc0123/" in sent["Authorization"]
    for text in (repr(endpoint), repr(settings)):
        assert SK not in text and TOKEN not in text
    with endpoint.client() as client:
        assert (client.dialect.name, client.dialect.region) == ("dlc", "ap-guangzhou")
    assert "TENCENTCLOUD_SECRET_KEY" in settings.source and SK not in settings.source


def test_dlc_from_the_config_file(config, no_tencent_profile: Path) -> None:
    path = config(
        {
            "url": "https://dlc.ap-shanghai.tencentcloudapi.com",
            "dialect": "dlc",
            "region": "ap-shanghai",
            "secret_id": "AKIDfile",
            "secret_key": SK,
            "session": {"cluster_name": "engine-1", "sc_type": "B"},
        }
    )
    settings = load_settings(env={}, config_file=path)
    assert settings.endpoint is not None and settings.endpoint.region == "ap-shanghai"
    assert settings.defaults.cluster_name == "engine-1"
    assert (
        "X-TC-Token"
        not in requests.Request("POST", "https://d/", json={}, auth=settings.endpoint.auth).prepare().headers
    )


def test_dlc_reads_the_sdks_profile_file_without_keys(missing: Path, no_tencent_profile: Path) -> None:
    profile = no_tencent_profile / ".tencentcloud" / "credentials"
    profile.parent.mkdir()
    profile.write_text(f"[default]\nsecret_id = AKIDprofile\nsecret_key = {SK}\n")
    env = {key: DLC_ENV[key] for key in ("DLI_KERNEL_URL", "DLI_KERNEL_DIALECT", "DLI_KERNEL_REGION")}
    endpoint = load_settings(env=env, config_file=missing).endpoint
    assert endpoint is not None
    sent = requests.Request("POST", "https://d/", json={}, auth=endpoint.auth).prepare().headers
    assert "Credential=AKIDprofile/" in sent["Authorization"]


@pytest.mark.parametrize(
    ("drop", "needle"),
    [
        ("DLI_KERNEL_REGION", "dialect dlc needs region: set DLI_KERNEL_REGION or region in"),
        ("TENCENTCLOUD_SECRET_KEY", "needs secret key: set TENCENTCLOUD_SECRET_KEY or secret_key in"),
        ("TENCENTCLOUD_SECRET_ID", "needs secret id: set TENCENTCLOUD_SECRET_ID or secret_id in"),
    ],
)
def test_dlc_errors_name_the_missing_setting(
    missing: Path, no_tencent_profile: Path, drop: str, needle: str
) -> None:
    env = {key: value for key, value in DLC_ENV.items() if key != drop}
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env, config_file=missing)
    assert needle in str(caught.value) and SK not in str(caught.value)


def test_a_bad_region_is_one_sentence(missing: Path, no_tencent_profile: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"DLI_KERNEL_REGION must be a region such as ap-guangzhou \(got 'Guang Zhou'\)\."
    ):
        load_settings(env=DLC_ENV | {"DLI_KERNEL_REGION": "Guang Zhou"}, config_file=missing)


def test_dlc_without_a_url_is_the_embedded_server_through_dlcs_actions(missing: Path) -> None:
    settings = load_settings(env={"DLI_KERNEL_DIALECT": "dlc"}, config_file=missing)
    assert settings.endpoint is None
    assert (settings.embedded_dialect, settings.region) == ("dlc", None)
    assert settings.defaults.cluster_name == "local"  # DLC names an engine; the embedded server has one
    plain = load_settings(env={}, config_file=missing)
    assert (plain.embedded_dialect, plain.defaults.cluster_name) == ("local", None)


def test_explicit_tc3_auth_on_a_livy_shaped_dialect_is_refused_without_keys(
    config, no_tencent_profile: Path
) -> None:
    path = config({"url": "https://gw.example.com", "auth": "tc3"})
    with pytest.raises(ConfigError, match="needs secret id"):
        load_settings(env={}, config_file=path)


# -- TLS: the CA bundle ------------------------------------------------------------------------------


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    trustme = pytest.importorskip("trustme")
    path = tmp_path / "team-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_the_ca_bundle_from_the_environment_is_what_the_client_verifies_with(
    missing: Path, ca_file: Path
) -> None:
    env = {"DLI_KERNEL_URL": "https://dli-server:8998", "DLI_KERNEL_CA_BUNDLE": str(ca_file)}
    settings = load_settings(env=env, config_file=missing)
    assert settings.endpoint is not None
    assert settings.endpoint.ca_bundle == settings.ca_bundle == str(ca_file)
    assert "DLI_KERNEL_CA_BUNDLE" in settings.source
    assert f"ca_bundle={str(ca_file)!r}" in repr(settings.endpoint)
    with settings.endpoint.client() as client:
        assert client._http.verify == str(ca_file)


def test_the_ca_bundle_from_the_file_and_the_environment_over_it(
    config, ca_file: Path, tmp_path: Path
) -> None:
    path = config({"url": "https://dli-server:8998", "ca_bundle": str(ca_file)})
    assert load_settings(env={}, config_file=path).ca_bundle == str(ca_file)
    other = tmp_path / "other-ca.pem"
    other.write_bytes(ca_file.read_bytes())
    settings = load_settings(env={"DLI_KERNEL_CA_BUNDLE": str(other)}, config_file=path)
    assert settings.ca_bundle == str(other)


def test_without_a_ca_bundle_certificates_are_still_verified(missing: Path) -> None:
    settings = load_settings(env={"DLI_KERNEL_URL": "https://dli-server:8998"}, config_file=missing)
    assert settings.endpoint is not None and settings.endpoint.ca_bundle is None
    with settings.endpoint.client() as client:
        assert client._http.verify is True


def test_the_ca_bundle_is_kept_for_the_embedded_server(missing: Path, ca_file: Path) -> None:
    settings = load_settings(env={"DLI_KERNEL_CA_BUNDLE": str(ca_file)}, config_file=missing)
    assert settings.endpoint is None
    assert settings.ca_bundle == str(ca_file)


def test_a_ca_bundle_that_does_not_exist_or_holds_no_certificate_is_one_sentence(
    missing: Path, tmp_path: Path
) -> None:
    nowhere = tmp_path / "nowhere.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for value, expected in (
        (
            str(nowhere),
            f"DLI_KERNEL_CA_BUNDLE must name the file of the CA certificate (PEM) that signed "
            f"the server's certificate (got {str(nowhere)!r}, which does not exist).",
        ),
        (str(not_pem), f"DLI_KERNEL_CA_BUNDLE names {not_pem}, which holds no PEM certificate"),
    ):
        env = {"DLI_KERNEL_URL": "https://dli-server:8998", "DLI_KERNEL_CA_BUNDLE": value}
        with pytest.raises(ConfigError) as info:
            load_settings(env=env, config_file=missing)
        assert str(info.value).startswith(expected)
        assert_one_sentence(str(info.value))


def test_a_ca_bundle_in_the_file_must_be_a_path(config) -> None:
    path = config({"url": "https://dli-server:8998", "ca_bundle": False})
    with pytest.raises(ConfigError, match=r"ca_bundle must name the file of the CA .* \(got a boolean\)\."):
        load_settings(env={}, config_file=path)
