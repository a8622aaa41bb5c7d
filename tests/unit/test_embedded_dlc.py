"""Unit tests for the embedded server spoken to through DLC's actions (``DLI_KERNEL_DIALECT=dlc``, no URL):
the endpoint signs with the OS user as SecretId and the server's token as SecretKey."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

import pytest
import requests
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.credential import Credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from dli_kernel.client import ConfigError
from dli_kernel.client.tc3 import TencentTC3
from dli_kernel.embedded import embedded_endpoint
from tests.unit.test_embedded import TOKEN, version_server, write_server_file

__all__ = ["version_server"]  # the fixture, used by name


def test_the_embedded_server_through_dlc_signs_with_its_token(
    tmp_path: Path, version_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_server_file(tmp_path, {"url": version_server, "token": TOKEN, "pid": os.getpid()})

    endpoint = embedded_endpoint(tmp_path, start=False, dialect="dlc", region="ap-beijing")

    assert (endpoint.url, endpoint.dialect, endpoint.region, endpoint.embedded) == (
        version_server,
        "dlc",
        "ap-beijing",
        True,
    )
    assert isinstance(endpoint.auth, TencentTC3) and TOKEN not in repr(endpoint)
    now = 1_714_550_400
    endpoint.auth._clock = lambda: now
    params = {"SessionId": "s"}
    ours = requests.Request("POST", version_server + "/", json=params, auth=endpoint.auth).prepare()
    # What the server checks: the SDK's signature with the OS user as SecretId and its token as SecretKey.
    host = version_server.removeprefix("http://")
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=host))
    sdk = CommonClient("dlc", "2021-01-25", Credential(getpass.getuser(), TOKEN), "ap-beijing", profile)
    theirs = RequestInternal(host, "POST", "/")
    monkeypatch.setattr(time, "time", lambda: now)
    sdk._build_req_inter("DescribeNotebookSession", params, theirs)
    assert ours.headers["Authorization"] == theirs.header["Authorization"]
    with endpoint.client() as client:
        assert client.dialect.name == "dlc" and client.server_extensions() == frozenset()


def test_the_embedded_dialect_comes_from_the_configuration(
    tmp_path: Path, version_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_server_file(tmp_path / "state", {"url": version_server, "token": TOKEN, "pid": os.getpid()})
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    for name in ("DLI_KERNEL_URL", "DLI_KERNEL_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DLI_KERNEL_DIALECT", "dlc")
    assert embedded_endpoint(tmp_path / "state", start=False).dialect == "dlc"
    monkeypatch.delenv("DLI_KERNEL_DIALECT")
    assert embedded_endpoint(tmp_path / "state", start=False).dialect == "local"


def test_the_embedded_server_speaks_only_its_dialects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"speaks local or dlc \(got 'dli'\)"):
        embedded_endpoint(tmp_path, start=False, dialect="dli")
