"""A Livy client nobody here wrote (the `livy` package on PyPI) drives the embedded server unchanged."""

from __future__ import annotations

import pandas as pd
import requests
from livy import LivySession, SessionKind, SessionState

from tests.integration.conftest import Server


def _http(server: Server) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {server.token}"
    return http


def test_livy_package_pyspark_session(server: Server) -> None:
    with LivySession.create(
        server.url,
        requests_session=_http(server),
        kind=SessionKind.PYSPARK,
        echo=False,
        heartbeat_timeout=120,
    ) as session:
        assert session.state == SessionState.IDLE
        output = session.run("df = spark.range(3).selectExpr('id', 'id * 2 AS twice')\ndf.count()")
        assert output.text == "3"
        frame = session.download("df")
        assert frame.to_dict("list") == {"id": [0, 1, 2], "twice": [0, 2, 4]}
    assert server.get(f"/sessions/{session.session_id}").json()["state"] == "killed"


def test_livy_package_download_sql(server: Server) -> None:
    with LivySession.create(server.url, requests_session=_http(server), kind=SessionKind.SQL) as session:
        frame = session.download_sql("SELECT id, CAST(id AS STRING) AS name FROM range(4) ORDER BY id")
    expected = pd.DataFrame({"id": [0, 1, 2, 3], "name": ["0", "1", "2", "3"]})
    pd.testing.assert_frame_equal(frame, expected)
