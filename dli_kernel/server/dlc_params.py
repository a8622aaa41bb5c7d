"""Reading DLC action requests: PascalCase JSON fields checked one by one, each refused with Tencent's error
code and one sentence, and CreateNotebookSession's fields mapped onto a SessionSpec.

Everything here runs before the manager is asked for anything, so a bad request changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dli_kernel.protocol import DLC_CU_CORES, DLC_CU_MEMORY_MB, DLC_REFUSED_KINDS, DLC_SIZES, KINDS
from dli_kernel.server import json_body
from dli_kernel.spec import (
    SessionSpec,
    SpecError,
    json_type,
    parse_id,
    parse_number,
    shown,
    smallest_dlc_size,
    unknown_names,
)

DEFAULT_SIZE = "small"  # DLC's default DriverSize and ExecutorSize
LARGEST_SIZE = max(DLC_SIZES, key=DLC_SIZES.__getitem__)
DEFAULT_EXECUTORS = 1  # DLC's default ExecutorNumbers
DEFAULT_TIMEOUT_S = 3600  # DLC's default TimeoutInSecond; here the session's heartbeat timeout
DYNAMIC_ALLOCATION = "spark.dynamicAllocation.enabled"
MIN_EXECUTORS = "spark.dynamicAllocation.minExecutors"
MAX_EXECUTORS = "spark.dynamicAllocation.maxExecutors"


class DlcError(Exception):
    """A refused request: ``code`` is Tencent's error code, ``str()`` the one sentence the client sees."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> DlcError:
    return DlcError("InvalidParameterValue", message)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The action's parameters: a JSON object read as every route reads bodies (``json_body``). Call it in
    a worker thread: a large body keeps the CPU busy."""
    try:
        body = json_body.load_json(raw)
    except json_body.BodyError as err:
        raise DlcError("InvalidParameter", str(err)) from None
    if not isinstance(body, dict):
        raise DlcError("InvalidParameter", f"the request body must be a JSON object (got {json_type(body)}).")
    return body


class Fields:
    """The fields of one action's request body, read by type; ``accepted`` lists those the action has."""

    def __init__(self, body: dict[str, Any], accepted: Iterable[str]) -> None:
        accepted = tuple(accepted)
        unknown = sorted(str(key) for key in body if key not in accepted)
        if unknown:
            raise DlcError("UnknownParameter", f"{unknown_names(unknown, accepted, 'parameter')}.")
        # JSON null means "not given", as the SDK's models treat None.
        self._body = {key: value for key, value in body.items() if value is not None}

    def _wrong_type(self, name: str, what: str) -> DlcError:
        value = self._body[name]
        return DlcError("InvalidParameter", f"{name} must be {what} (got {json_type(value)}: {value!r}).")

    def given(self, name: str) -> bool:
        return name in self._body

    def string(self, name: str, required: bool = False) -> str | None:
        if name not in self._body:
            if required:
                raise DlcError("MissingParameter", f"{name} is required.")
            return None
        value = self._body[name]
        if not isinstance(value, str):
            raise self._wrong_type(name, "a string")
        if required and not value.strip():
            raise DlcError("MissingParameter", f"{name} is required and must not be empty.")
        return value

    def required(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None  # string() raised otherwise
        return value

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        if name not in self._body:
            return default
        value = self._body[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong_type(name, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else ""
            bounds = f"between {minimum}{upper}" if maximum is not None else f">= {minimum}"
            raise invalid(f"{name} must be an integer {bounds} (got {value}).")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self._body:
            return default
        if not isinstance(self._body[name], bool):
            raise self._wrong_type(name, "true or false")
        return bool(self._body[name])

    def strings(self, name: str) -> list[str]:
        value = self._body.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self._wrong_type(name, "a list of non-empty strings")
        return value

    def objects(self, name: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        """A list of objects with (at most) ``keys``, e.g. KVPair's Key and Value."""
        value = self._body.get(name, [])
        what = f"a list of objects with {', '.join(keys)}"
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self._wrong_type(name, what)
        for item in value:
            extra = sorted(set(item) - set(keys))
            if extra:
                raise DlcError("UnknownParameter", f"{name}: {unknown_names(extra, keys)}.")
        return value


def kind(value: str, field: str = "Kind") -> str:
    wanted = value.strip().lower()
    if wanted in DLC_REFUSED_KINDS:
        raise DlcError(
            "InvalidParameter.InvalidSessionKindType",
            f"{field} {value!r} is not supported by this server, which runs no R; use one of "
            f"{', '.join(KINDS)}.",
        )
    if wanted not in KINDS:
        raise DlcError(
            "InvalidParameter.InvalidSessionKindType",
            f"{field} must be one of {', '.join(KINDS)} (got {value!r}).",
        )
    return wanted


def size(fields: Fields, name: str) -> int:
    """The CUs of DriverSize or ExecutorSize."""
    value = fields.string(name) or DEFAULT_SIZE
    if value.strip().lower() not in DLC_SIZES:
        raise invalid(f"{name} must be one of {', '.join(DLC_SIZES)} (got {value!r}).")
    return DLC_SIZES[value.strip().lower()]


def size_name(cores: int, memory_mb: int) -> str:
    """The smallest DLC size that holds ``cores`` and ``memory_mb`` (the largest for anything bigger)."""
    return smallest_dlc_size(cores, memory_mb) or LARGEST_SIZE


def key_values(fields: Fields, name: str) -> dict[str, str]:
    conf: dict[str, str] = {}
    for pair in fields.objects(name, ("Key", "Value")):
        key, value = pair.get("Key"), pair.get("Value")
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise DlcError(
                "InvalidParameter", f"each {name} entry must be {{Key: non-empty string, Value: string}}."
            )
        conf[key] = value
    return conf


def _executor_bounds(conf: dict[str, str]) -> None:
    """Refuse Spark's dynamic-allocation bounds in Arguments unless they are counts Spark takes, so that a
    session is never made with values that its description (ExecutorMaxNumbers) could not show."""
    counts = {}
    for key, least in ((MIN_EXECUTORS, 0), (MAX_EXECUTORS, 1)):
        if key in conf:
            count = parse_number(conf[key].strip())
            if count is None or count < least:
                raise invalid(
                    f"Arguments: {key} must be a whole number >= {least} in ASCII digits "
                    f"(got {shown(conf[key])})."
                )
            counts[key] = count
    if counts.get(MIN_EXECUTORS, 0) > counts.get(MAX_EXECUTORS, counts.get(MIN_EXECUTORS, 0)):
        raise invalid(
            f"Arguments: {MIN_EXECUTORS} ({counts[MIN_EXECUTORS]}) must not be more than "
            f"{MAX_EXECUTORS} ({counts[MAX_EXECUTORS]})."
        )


CREATE_FIELDS = (
    "Name", "Kind", "DataEngineName", "ProgramDependentFiles", "ProgramDependentJars",
    "ProgramDependentPython", "ProgramArchives", "DriverSize", "ExecutorSize", "ExecutorNumbers",
    "Arguments", "ProxyUser", "TimeoutInSecond", "ExecutorMaxNumbers", "SparkImage", "IsInherit",
)  # fmt: skip


def session_spec(body: dict[str, Any]) -> SessionSpec:
    """CreateNotebookSession's body as a SessionSpec.

    SparkImage and IsInherit are accepted and have no effect: this server runs the one Spark it has, and
    a DLC engine's inherited configuration is what the request leaves unset here anyway.
    """
    fields = Fields(body, CREATE_FIELDS)
    wanted_kind = kind(fields.required("Kind"))
    cluster = fields.required("DataEngineName")
    driver, executor = size(fields, "DriverSize"), size(fields, "ExecutorSize")
    executors = fields.integer("ExecutorNumbers", DEFAULT_EXECUTORS, minimum=1)
    most = fields.integer("ExecutorMaxNumbers", executors, minimum=1)
    if most < executors:
        raise invalid(f"ExecutorMaxNumbers ({most}) must not be less than ExecutorNumbers ({executors}).")
    conf = key_values(fields, "Arguments")
    if most > executors:
        # DLC scales between the two with dynamic allocation; Spark's own settings say the same.
        for key, value in ((DYNAMIC_ALLOCATION, "true"), (MIN_EXECUTORS, executors), (MAX_EXECUTORS, most)):
            conf.setdefault(key, str(value))
    _executor_bounds(conf)
    fields.string("SparkImage")
    fields.integer("IsInherit", 0, minimum=0, maximum=1)
    try:
        return SessionSpec(
            kind=wanted_kind,
            name=fields.string("Name") or None,
            cluster_name=cluster,
            driver_memory_mb=driver * DLC_CU_MEMORY_MB,
            driver_cores=driver * DLC_CU_CORES,
            executor_memory_mb=executor * DLC_CU_MEMORY_MB,
            executor_cores=executor * DLC_CU_CORES,
            num_executors=executors,
            conf=conf,
            jars=tuple(fields.strings("ProgramDependentJars")),
            py_files=tuple(fields.strings("ProgramDependentPython")),
            files=tuple(fields.strings("ProgramDependentFiles")),
            archives=tuple(fields.strings("ProgramArchives")),
            heartbeat_timeout_s=fields.integer("TimeoutInSecond", DEFAULT_TIMEOUT_S, minimum=0),
            proxy_user=fields.string("ProxyUser") or None,
        )
    except SpecError as err:
        raise invalid(str(err)) from None


@dataclass(frozen=True)
class TaskId:
    """DLC names a statement's SQL result by a task id; here it is ``<SessionId>.<StatementId>``."""

    session: str
    statement: str

    def __str__(self) -> str:
        return f"{self.session}.{self.statement}"

    @classmethod
    def parse(cls, value: str) -> TaskId:
        session, _, statement = value.rpartition(".")
        if not session or parse_id(statement) is None:
            raise DlcError(
                "ResourceNotFound",
                f"task {shown(value)} does not exist: a TaskId is the one a statement's description gives.",
            )
        return cls(session, statement)
