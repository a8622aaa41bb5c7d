"""The fuzz engine of tests/reliability: schemathesis generates requests from the server's own
``GET /openapi.json``, valid ones and invalid ones, with a fixed seed and budget; every answer is checked
(no 5xx, nor DLC's InternalError, its 500 in a 200; every refusal JSON: ``{"msg": "..."}`` on the Livy and
DLI paths, DLC's ``Response.Error`` on ``POST /``), counted, and any bad one kept with its request.

Schemathesis' own cases are valid UTF-8 text of modest size and mostly name unknown ids. So each case may
also get one hostile change, drawn with it: its path parameters set to a live session of the fuzzer's
(by id, uuid, or its non-Latin-1 name), another user's (which must stay invisible), or an id that only
looks like one (Unicode or padded digits, 5,000 digits); a query parameter set to such text; a string
field of its body set to a lone surrogate, non-Latin-1 or control text; or its whole body replaced by
bytes no generator makes (JSON nested 5,000 deep, a 5,000-digit number, invalid UTF-8).

What it fires at is a ``Target``: the in-process server of conftest.py (test_fuzz.py) or a real one
(test_fuzz_real.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import hypothesis
import requests
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from dli_kernel.client.tc3 import TencentTC3
from dli_kernel.protocol import DLC_PATH
from tests.reliability import hostile
from tests.reliability.conftest import TIMEOUT

SEED = 15
# A long-poll (?wait=) holds its answer by design, up to 30 s: the fuzz shortens any wait it sends to this.
HELD = 0.05
PROJECT = "proj-fuzz"


BROWSER_PAGES = ("/ui/{path}", "/driver-log")


def json_error_body(ctx: Any, response: Any, case: Any) -> None:
    """A refusal is JSON in the route family's shape; DLC never hides a server error in its 200."""
    if case.operation.path == DLC_PATH:
        answer = json.loads(response.content)["Response"]
        assert isinstance(answer["RequestId"], str), "DLC's Response has no RequestId"
        error = answer.get("Error")
        if error is not None:
            assert isinstance(error["Code"], str) and isinstance(error["Message"], str), "DLC Error shape"
            assert error["Code"] != "InternalError", f"DLC InternalError: {error['Message']}"
        assert response.status_code == 200, f"DLC answered HTTP {response.status_code}"
        return
    assert response.status_code < 500, f"server error {response.status_code}"
    if case.operation.path.endswith(BROWSER_PAGES) and "json" not in _content_type(response):
        # Pages a browser opens: a page of the Spark UI's own (its 404 too), which the proxy passes on as it
        # is, and the driver log's text, whose refusals of a signed link are a sentence for a person.
        return
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise AssertionError(f"a {response.status_code} whose body is not JSON") from None
        assert isinstance(body, dict) and isinstance(body.get("msg"), str), f"no 'msg' string in {body!r}"


def _content_type(response: Any) -> str:
    value = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
    return str(value[0] if isinstance(value, list) and value else value)


CHECKS = [not_a_server_error, json_error_body]
# What the fuzz changes in a case: its path parameters, and one of its query, a body field or its body.
Change = tuple[dict[str, str] | None, tuple[str, Any] | None]


@dataclass(frozen=True)
class Named:
    """How paths may name a session: its Livy id, its DLI uuid, its name."""

    id: str
    uuid: str
    name: str

    @property
    def keys(self) -> tuple[str, str, str]:
        return (self.id, self.uuid, self.name)


class Target(Protocol):
    url: str
    http: requests.Session
    headers: dict[str, str]  # the Bearer token of the user the fuzz is
    dlc: TencentTC3 | None  # how that user signs DLC actions; None: DLC's POST / is not fuzzed

    def sessions(self) -> tuple[list[Named], list[Named]]:
        """Live sessions of the fuzz's user (at least one), and of another user; called before each
        operation, so that a target can make new ones for those a DELETE ended."""
        ...


@dataclass
class Fuzz:
    target: Target
    document: dict[str, Any]
    examples: int  # per operation and generation mode (valid, invalid)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)  # hostile changes made, by kind
    seconds: Counter[str] = field(default_factory=Counter)  # time spent on each operation
    findings: dict[str, tuple[int, str]] = field(default_factory=dict)  # kind -> (count, first example)
    seeds: list[Named] = field(default_factory=list)
    others: list[Named] = field(default_factory=list)

    # -- the sessions the path parameters name ----------------------------------------------------

    def path_values(self, live: bool) -> dict[str, list[str]]:
        """Values for path parameters: the seeds' own (``live``), or anything from another user's
        session to text that only looks like an id."""
        ui_paths = ["jobs/", "redirect", "api/v1/applications", "static/x.js", "../..", "a//b"]
        keys = [k for s in self.seeds for k in s.keys]
        if live:
            return {"session_id": keys, "statement_id": ["0"], "project_id": [PROJECT], "path": ui_paths}
        other = [k for s in self.others for k in s.keys]
        odd = hostile.unicode_digits(self.seeds[0].id)
        return {
            "session_id": [*other, *odd, *hostile.TEXT],
            "statement_id": ["1", *hostile.unicode_digits("0"), *hostile.TEXT],
            "project_id": list(hostile.TEXT),
            "path": list(hostile.TEXT),
        }

    # -- what each operation may get changed ----------------------------------------------------------

    def changes_for(self, operation: Any) -> Any:
        """A strategy for what to change in a case of ``operation``: its path parameters (mostly to a
        live session's, so that its body and query reach the manager), and one other thing, or None."""
        described = self.document["paths"][operation.path][operation.method.lower()]
        names = re.findall(r"{(\w+)}", operation.path)
        path: Any = st.none()
        if names:
            live, odd = self.path_values(live=True), self.path_values(live=False)
            pick = [st.fixed_dictionaries({n: st.sampled_from(v[n]) for n in names}) for v in (live, odd)]
            path = st.one_of(pick[0], pick[0], pick[1], st.none())
        options: list[Any] = [st.none()]
        query = [p["name"] for p in described.get("parameters", []) if p["in"] == "query"]
        if query:
            text = st.sampled_from(hostile.TEXT)
            options.append(
                st.tuples(st.just("query"), st.fixed_dictionaries({}, optional=dict.fromkeys(query, text)))
            )
        body = described.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body is not None:
            fields = sorted(body.get("properties", {})) or ["SessionId", "Code", "Kind"]
            options.append(st.tuples(st.just("value"), st.sampled_from(hostile.TEXT + hostile.SURROGATES)))
            options.append(st.tuples(st.just("raw"), st.sampled_from(hostile.raw_bodies(fields))))
        return st.tuples(path, st.one_of(options))

    # -- one operation --------------------------------------------------------------------------------

    def run(self, operation: Any) -> None:
        started = time.monotonic()
        self.seeds, self.others = self.target.sessions()
        ids = st.sampled_from([None, *(s.uuid for s in [*self.seeds, *self.others])])
        changes = self.changes_for(operation)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=self.examples,
                database=None,
                deadline=None,
                phases=[hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
                print_blob=False,
            )
            @hypothesis.seed(SEED)
            @hypothesis.given(
                case=operation.as_strategy(generation_mode=mode), dlc_session=ids, change=changes
            )
            def fire(case: Any, dlc_session: str | None, change: Change) -> None:
                self.send(case, dlc_session, change)

            # Unsatisfiable: nothing of this operation can be made invalid (no parameters, no body)
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                fire()
        self.seconds[operation.label] += time.monotonic() - started

    def send(self, case: Any, dlc_session: str | None, change: Change) -> None:
        dlc = case.operation.path == DLC_PATH
        if dlc and dlc_session is not None:
            name_session(case, dlc_session)
        raw = self.apply(case, change)
        shorten_wait(case)
        headers = {} if dlc else self.target.headers
        extra: dict[str, Any] = {"auth": self.target.dlc} if dlc else {}
        label = case.operation.label
        try:
            if raw is None:
                response = case.call(
                    base_url=self.target.url,
                    session=self.target.http,
                    headers=headers,
                    timeout=TIMEOUT,
                    **extra,
                )
            else:
                sent = case.as_transport_kwargs(base_url=self.target.url, headers=headers)
                sent.pop("json", None)
                sent["headers"]["Content-Type"] = "application/json"
                response = self.target.http.request(**{**sent, "data": raw}, timeout=TIMEOUT, **extra)
        except requests.RequestException as err:
            # uvicorn closes a connection whose request raised (a 500): a drop may be the last 500's echo.
            self.note(f"{label}: no answer ({type(err).__name__})", describe_case(case, raw, err))
            return
        self.requests += 1
        self.statuses[response.status_code] += 1
        self.per_operation[label] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            reason = "; ".join(sorted({str(f.title) for f in group.exceptions}))
            self.note(f"{label}: {response.status_code} {reason} {error_name(response)}", describe(response))

    def apply(self, case: Any, change: Change) -> bytes | None:
        """Make ``change`` to ``case``; the body to send instead of the case's, if it has one."""
        path, other = change
        if path is not None:
            self.changes["path"] += 1
            case.path_parameters = {**case.path_parameters, **path}
        if other is None:
            return None
        what, value = other
        self.changes[what] += 1
        if what == "query":
            case.query = {**(case.query or {}), **value}
        elif what == "raw":
            return bytes(value)
        elif isinstance(case.body, dict) and case.body:
            # The first string field gets the text; json.dumps writes a lone surrogate as a JSON escape.
            name = next((k for k, v in case.body.items() if isinstance(v, str)), next(iter(case.body)))
            return json.dumps({**case.body, name: value}).encode()
        return None

    def fire_at(self, operations: list[Any]) -> float:
        """Fuzz each operation in turn; the seconds it took."""
        started = time.monotonic()
        for operation in operations:
            self.run(operation)
        return time.monotonic() - started

    def found(self) -> list[str]:
        """Each kind of bad answer, how often, and the first request that got it."""
        return [
            f"[{count}x] {kind}\n    {example}" for kind, (count, example) in sorted(self.findings.items())
        ]

    def note(self, kind: str, example: str) -> None:
        count, first = self.findings.get(kind, (0, example))
        self.findings[kind] = (count + 1, first)

    def summary(self, seconds: float) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        changed = ", ".join(f"{what}: {n}" for what, n in sorted(self.changes.items()))
        slowest = ", ".join(f"{label} {t:.1f} s" for label, t in self.seconds.most_common(2))
        return (
            f"fuzz: {self.requests} requests on {len(self.per_operation)} operations in {seconds:.1f} s "
            f"(seed {SEED}); status codes {{{codes}}}; hostile changes {{{changed}}}; "
            f"findings: {len(self.findings)} kinds; slowest: {slowest}"
        )


def shorten_wait(case: Any) -> None:
    """A valid ?wait= of more than HELD seconds becomes HELD: parsing it is fuzzed, holding is not."""
    query = case.query or {}
    try:
        wait = float(query.get("wait", ""))
    except (TypeError, ValueError):
        return
    if math.isfinite(wait) and wait > HELD:
        case.query = {**query, "wait": HELD}


def name_session(case: Any, session_uuid: str) -> None:
    """Point a DLC action at a live session, where its body has a field for one."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "SessionId" in body:
        body = {**body, "SessionId": session_uuid}
    if "TaskId" in body:
        body = {**body, "TaskId": f"{session_uuid}.0"}
    if "StatementId" in body:
        body = {**body, "StatementId": "0"}
    case.body = body


def error_name(response: Any) -> str:
    """The exception a 500 names (this server says only its type), or DLC's error code."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    msg = body.get("msg") if isinstance(body, dict) else None
    if isinstance(msg, str):
        found = re.search(r"\((\w+)\)", msg)
        return found.group(1) if found and response.status_code >= 500 else ""
    error = body.get("Response", {}).get("Error", {}) if isinstance(body, dict) else {}
    return str(error.get("Code", ""))


def describe(response: Any) -> str:
    request = response.request
    body = request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "backslashreplace")
    action = request.headers.get("X-TC-Action", "")
    return (
        f"{request.method} {request.url} {action} body={str(body or '')[:300]!r}\n"
        f"    -> {response.status_code} {response.content[:300]!r}"
    )


def describe_case(case: Any, raw: bytes | None, err: Exception) -> str:
    body = raw.decode("utf-8", "backslashreplace") if raw is not None else str(case.body)
    return f"{case.method} {case.formatted_path} query={case.query!r} body={body[:300]!r}: {err}"
