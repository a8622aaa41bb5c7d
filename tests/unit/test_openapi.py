"""``GET /openapi.json``: one operation for each route the app has, and nothing it lacks; bodies that say
what the server accepts (the session fields from the spec's table, DLC's actions checked against the
actions themselves); a document OpenAPI tools load."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dli_kernel.protocol import DLC_API_VERSION, DLC_SERVICE, DLC_SIGN_ALGORITHM
from dli_kernel.server import tc3
from dli_kernel.server.app import create_app
from dli_kernel.server.dlc_actions import ACTIONS
from dli_kernel.server.openapi import DLC_BODIES, OPERATIONS, SPEC_SCHEMAS, document
from dli_kernel.spec import SPEC_FIELDS
from tests.unit.fake_manager import FakeManager

TOKEN = "openapi-token-3e9f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(FakeManager(tmp_path), TOKEN, "http://127.0.0.1:8998"))


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    reply = client.get("/openapi.json", headers=AUTH)
    assert reply.status_code == 200
    return reply.json()


def test_every_route_is_one_operation_and_every_operation_a_route(client: TestClient, doc: dict) -> None:
    served = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    for method, path in served:
        concrete = re.sub(r"{\w+}", "x", path)
        reply = client.request(method, concrete, headers=AUTH)
        assert reply.status_code not in (405,) and "no such endpoint" not in reply.text, (method, path)
    # Both families and DLC's action API are all there, and every description is used.
    keys = {(m, p[len("/v2.0/{project_id}") :] if p.startswith("/v2.0/") else p) for m, p in served}
    assert keys - {("POST", "/")} == set(OPERATIONS)
    assert sum(p.startswith("/v2.0/{project_id}/sessions") for _, p in served) == 14
    assert ("POST", "/") in served and len(served) == len({*OPERATIONS, ("POST", "/")}) + 14


def test_a_route_without_a_description_fails_the_document() -> None:
    from starlette.routing import Route

    async def nothing(request: Any) -> None: ...

    with pytest.raises(LookupError, match=re.escape("GET /sessions/{session_id}/nowhere")):
        document([Route("/sessions/{session_id}/nowhere", nothing, methods=["GET"])], "http://x")


def test_the_document_needs_the_token_like_every_route(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 401


def test_session_bodies_come_from_the_spec_fields(doc: dict) -> None:
    livy = doc["paths"]["/sessions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    dli = doc["paths"]["/v2.0/{project_id}/sessions"]["post"]["requestBody"]["content"]["application/json"]
    assert set(SPEC_SCHEMAS) == {f.attr for f in SPEC_FIELDS}
    assert set(livy["properties"]) == {f.livy for f in SPEC_FIELDS if f.livy}
    assert set(dli["schema"]["properties"]) == {f.dli for f in SPEC_FIELDS if f.dli}
    assert dli["schema"]["required"] == ["kind", "cluster_name"] and "required" not in livy
    assert livy["additionalProperties"] is False  # unknown fields are refused


def _dlc(client: TestClient, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """A DLC action signed with the server's token, as Tencent's SDK signs it; DLC's Response."""
    raw = json.dumps(body).encode()
    now = int(time.time())
    date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    sent = {
        "content-type": "application/json",
        "host": "testserver",
        "x-tc-action": action,
        "x-tc-version": DLC_API_VERSION,
        "x-tc-timestamp": str(now),
    }
    signed = ("content-type", "host")
    signature = tc3.signature(TOKEN, "POST", "/", "", sent, signed, raw, str(now), date)
    sent["authorization"] = (
        f"{DLC_SIGN_ALGORITHM} Credential=alice/{date}/{DLC_SERVICE}/{tc3.TERMINATOR}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return client.post("/", content=raw, headers=sent).json()["Response"]


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_each_dlc_body_names_exactly_the_fields_its_action_accepts(client: TestClient, action: str) -> None:
    fields, required = DLC_BODIES[action]
    # Every documented field is known to the action (null is "not given", so only the names are checked)...
    answer = _dlc(client, action, dict.fromkeys(fields))
    assert answer.get("Error", {}).get("Code") != "UnknownParameter", answer
    # ...and an unknown one is refused with the list of those it knows: the documented ones.
    refused = _dlc(client, action, {"NoSuchField": 1})["Error"]
    assert refused["Code"] == "UnknownParameter"
    accepted = refused["Message"].split("accepted parameters are: ", 1)[1].rstrip(".")
    assert set(accepted.split(", ")) == set(fields)
    assert set(required) <= set(fields)


def test_dlc_is_one_operation_picked_by_its_action_header(doc: dict) -> None:
    operation = doc["paths"]["/"]["post"]
    action = next(p for p in operation["parameters"] if p["name"] == "X-TC-Action")
    assert set(action["schema"]["enum"]) == set(ACTIONS) == set(DLC_BODIES)
    one_of = operation["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in one_of} == set(ACTIONS)
    assert operation["security"] == [{"tc3": []}]


def test_the_document_loads_in_an_openapi_tool(doc: dict) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(doc)
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert "POST /v2.0/{project_id}/sessions/{session_id}/statements" in labels
    assert "GET /sessions/{session_id}/ui/{path}" in labels


def test_sessions_are_described_with_whether_they_share_a_driver(doc: dict) -> None:
    session = doc["components"]["schemas"]["Session"]
    assert session["properties"]["sharedDriver"]["type"] == "boolean"
    assert "sharedDriver" in session["required"]
    for path in ("/sessions/{session_id}", "/v2.0/{project_id}/sessions/{session_id}"):
        answer = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": "#/components/schemas/Session"}
    listed = doc["paths"]["/sessions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["properties"]["sessions"]["items"] == {"$ref": "#/components/schemas/Session"}
