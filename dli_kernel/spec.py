"""What a session request may contain: the one place where session bodies are parsed and validated.

Two wire families describe the same thing: Livy's ``POST /sessions`` and DLI's
``POST /v2.0/{project_id}/sessions``.  Both map onto :class:`SessionSpec`.  Every rule lives once, in
``SPEC_FIELDS``: the wire parsers only rename fields and call the constructor, and the constructor
(``__post_init__``) validates, so a spec built in Python, parsed from a request or changed with
:meth:`SessionSpec.replace` obeys the same rules.  Error messages name the wire field, because that is what
the user wrote.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from dli_kernel.protocol import DLC_CU_CORES, DLC_CU_MEMORY_MB, DLC_SIZES, KIND_ALIASES, KINDS


class SpecError(ValueError):
    """A bad session request; str(err) is ONE sentence saying what was wrong and what is accepted."""


# -- kinds ------------------------------------------------------------------------------------------



def normalize_kind(value: object, field: str = "kind") -> str:
    """The canonical kind for ``value`` (a kind or an alias, any case)."""
    if isinstance(value, str):
        kind = value.strip().lower()
        kind = KIND_ALIASES.get(kind, kind)
        if kind in KINDS:
            return kind
    raise SpecError(f"{field} must be one of {', '.join(KINDS)} (got {value!r}).")


# -- resources --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resources:
    driver_memory_mb: int
    driver_cores: int
    executor_memory_mb: int
    executor_cores: int
    num_executors: int


# DLI Table 5.  The physical sizes (8/16/32 vCPUs) are the queue's, not the session's, so they are not kept.
TIERS: dict[str, Resources] = {
    "A": Resources(7 * 1024, 2, 4 * 1024, 1, 6),
    "B": Resources(7 * 1024, 2, 8 * 1024, 2, 7),
    "C": Resources(15 * 1024, 4, 8 * 1024, 2, 14),
}
DEFAULT_TIER = "A"


def smallest_dlc_size(cores: int, memory_mb: int) -> str | None:
    """The smallest DLC size (``protocol.DLC_SIZES``) with ``cores`` and ``memory_mb``; None if none has."""
    return next(
        (
            name
            for name, cus in DLC_SIZES.items()
            if cores <= cus * DLC_CU_CORES and memory_mb <= cus * DLC_CU_MEMORY_MB
        ),
        None,
    )


# -- scalar parsers ---------------------------------------------------------------------------------

# Binary multiples throughout: the DLI doc treats "2 GB" and "2048 MB" as the same size, and so does Spark.
_MB_PER_UNIT: dict[str, Fraction] = {"b": Fraction(1, 1024 * 1024)} | {
    suffix: Fraction(1024) ** power
    for power, letter in enumerate("kmgt", start=-1)
    for suffix in (letter, f"{letter}b", f"{letter}ib")
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)", re.IGNORECASE | re.ASCII)


def parse_memory(value: object, field: str) -> int:
    """Megabytes in a size such as ``"2 GB"``, ``"2048 MB"``, ``"2g"`` or ``"1.5 GiB"``; units required."""
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    factor = _MB_PER_UNIT.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        # A bare number is refused on purpose: DLI says "the unit must be provided" (its startup fails
        # otherwise), and guessing MB, GB or bytes would silently size a session wrong by a factor of 1024.
        raise SpecError(
            f"{field} must be a size with a unit, such as '2 GB', '2048 MB' or '2g' (got {value!r})."
        )
    megabytes = math.floor(Fraction(match.group(1)) * factor + Fraction(1, 2))  # nearest MB, halves up
    if megabytes < 1:
        raise SpecError(f"{field} must be at least 1 MB, such as '2 GB', '2048 MB' or '2g' (got {value!r}).")
    return megabytes


def format_memory(mb: int) -> str:
    """The DLI/Livy wire form (and the human one): ``"7 GB"``, or ``"2500 MB"`` when not whole gigabytes."""
    return f"{mb // 1024} GB" if mb % 1024 == 0 else f"{mb} MB"


def spark_memory(mb: int) -> str:
    """The Spark conf form: ``"7g"``, or ``"2500m"`` when not whole gigabytes."""
    return f"{mb // 1024}g" if mb % 1024 == 0 else f"{mb}m"


MAX_DIGITS = 18  # every id and count here fits; more is nobody's id, and int() of it costs time
_NUMBER = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


def parse_number(text: str) -> int | None:
    """``text`` as a non-negative integer if it is 1 to MAX_DIGITS ASCII digits, else None.

    Not ``str.isdigit()``: that holds for '²' and '٢', which int() refuses or reads as another number,
    and for strings too long for int() to parse at all.
    """
    return int(text) if _NUMBER.fullmatch(text) else None


_ID = re.compile(rf"0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}}")


def parse_id(text: str) -> int | None:
    """``text`` as a session or statement number if it is one in canonical form: ASCII digits without a
    leading zero ('0' itself aside). '007' names no session 7, nor does an Arabic-Indic or a
    superscript 7."""
    return int(text) if _ID.fullmatch(text) else None


# A project id as DLI (Huawei Cloud) gives them: ASCII letters and digits (32 hex digits in practice), with
# the '.', '_' and '-' a private deployment may use; never text a URL or a header must encode.
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_project_id(text: str) -> bool:
    return _PROJECT_ID.fullmatch(text) is not None


def lone_surrogate(text: str) -> str | None:
    """The first lone UTF-16 surrogate in ``text``, as its escape ('\\ud800'); None when ``text`` is
    Unicode text. JSON lets a string escape half a surrogate pair, Python keeps it, and then nothing can
    encode it as UTF-8: a name or code holding one breaks every answer that shows it."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"\\u{ord(text[err.start]):04x}"
    return None


def shown(value: object, limit: int = 80) -> str:
    """``value`` for a message: its repr (a string quoted), cut short when a client sent something long.
    A list or object is only described: the repr of a few million items would take the CPU (and the GIL)
    for a second."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, list | dict):
        return f"{json_type(value)} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _parse_int(value: object, field: str, minimum: int, what: str) -> int:
    # bool is an int subclass, but `"driverCores": true` is a mistake, not 1.
    number = int(value) if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value, re.ASCII) else value
    if isinstance(number, int) and not isinstance(number, bool) and number >= minimum:
        return number
    raise SpecError(f"{field} must be {what} (got {value!r}).")


def parse_positive_int(value: object, field: str) -> int:
    """An integer >= 1, given as a JSON number or a string of digits."""
    return _parse_int(value, field, 1, "a positive integer")


_SECONDS_PER_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)\s*([smhd]?)", re.IGNORECASE | re.ASCII)


def parse_duration(value: object, field: str) -> int:
    """Seconds in a Livy duration such as ``"30s"``, ``"10m"``, ``"1h"``, ``"2d"``; no unit means seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        seconds = int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2).lower() or "s"] if match else 0
    if seconds < 1:
        raise SpecError(
            f"{field} must be a positive duration such as '30s', '10m', '1h', '2d' or a number of seconds "
            f"(got {value!r})."
        )
    return seconds


def format_duration(seconds: float) -> str:
    """A duration in its largest exact unit: ``"45s"``, ``"10m"``, ``"90m"``, ``"1d"``.

    The one form for every duration: Livy's wire form (``parse_duration`` reads it back), and what the
    magics show, after rounding an age to a readable unit first.
    """
    whole = max(int(seconds), 0)
    unit = next((unit for unit, size in _SECONDS_PER_UNIT.items() if whole and whole % size == 0), "s")
    return f"{whole // _SECONDS_PER_UNIT[unit]}{unit}"


# -- field checks, as the constructor applies them -------------------------------------------------


def _check_string(value: object, field: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise SpecError(f"{field} must be a non-empty string (got {value!r}).")


def _check_name(value: object, field: str) -> str:
    # Lone surrogates are refused in request bodies (server/json_body), not here: a record stored before
    # that check holds such a name, and a restarted server must still load it.
    if isinstance(value, str) and 1 <= len(value) <= 128:
        return value
    got = f"a string of {len(value)} characters" if isinstance(value, str) and value else repr(value)
    raise SpecError(f"{field} must be a string of 1 to 128 characters (got {got}).")


def _check_sc_type(value: object, field: str) -> str:
    tier = value.strip().upper() if isinstance(value, str) else None
    if tier in TIERS:
        return tier
    raise SpecError(f"{field} must be one of {', '.join(TIERS)} (got {value!r}).")


def _check_megabytes(value: object, field: str) -> int:
    # Only reached for a spec built in Python: on the wire parse_memory has already turned "2 GB" into 2048.
    return parse_positive_int(value, f"{field} (in MB)")


# Kernels and sparkmagic beat every 30 s at most: a shorter timeout than two of their beats reaps a live
# session whose one beat came late. The kernel beats faster for short timeouts (RemoteSession).
MIN_HEARTBEAT_TIMEOUT_S = 60


def _check_heartbeat(value: object, field: str) -> int:
    least = f"0 (off) or at least {MIN_HEARTBEAT_TIMEOUT_S}"
    seconds = _parse_int(value, field, 0, f"a whole number of seconds, 0 or more: {least}")
    if 0 < seconds < MIN_HEARTBEAT_TIMEOUT_S:
        raise SpecError(f"{field} must be {least} seconds, as clients beat every 30 s (got {seconds}).")
    return seconds


def _check_strings(value: object, field: str) -> tuple[str, ...]:
    # A bare string is refused rather than split into characters or wrapped: "a.jar,b.jar" is ambiguous.
    if isinstance(value, list | tuple) and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise SpecError(f"{field} must be a list of non-empty strings (got {value!r}).")


def _check_objects(value: object, field: str) -> tuple[dict, ...]:
    if isinstance(value, list | tuple) and all(isinstance(item, dict) for item in value):
        return tuple(copy.deepcopy(item) for item in value)  # so the caller's dicts cannot change the spec
    raise SpecError(f"{field} must be a list of JSON objects (got {value!r}).")


def _conf_value(value: object) -> str | None:
    # Spark conf is all strings; JSON booleans become Spark's spelling, not Python's "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _check_conf(value: object, field: str) -> dict[str, str]:
    if isinstance(value, dict):
        conf = {key: _conf_value(item) for key, item in value.items()}
        if all(isinstance(key, str) and key for key in conf):
            strings = {key: item for key, item in conf.items() if item is not None}
            if len(strings) == len(conf):
                return strings
    raise SpecError(
        f"{field} must be an object mapping non-empty setting names to strings, numbers or booleans "
        f"(got {value!r})."
    )


def conf_from_dli(value: object, field: str) -> object:
    """DLI documents conf as an array of objects; fold the array forms into one object for ``_check_conf``."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        conf: dict[object, object] = {}
        for item in value:
            if isinstance(item, dict) and item.keys() == {"key", "value"}:
                conf[item["key"]] = item["value"]
            elif isinstance(item, dict) and len(item) == 1:
                conf.update(item)
            else:
                break
        else:
            return conf
    raise SpecError(
        f'{field} must be an object {{name: value}}, a list of {{"key": name, "value": value}} objects '
        f"or a list of single-entry objects (got {value!r})."
    )


# -- the field table --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    attr: str
    livy: str | None  # wire name in Livy's body, None when Livy has no such field
    dli: str | None  # wire name in DLI's body, None when DLI has no such field
    check: Callable[[Any, str], Any]  # attribute value -> normalised attribute value, or SpecError
    parse: Callable[[Any, str], Any] | None = None  # wire value -> attribute value, when they differ
    emit: Callable[[Any], Any] | None = None  # attribute value -> wire value, when they differ

    @property
    def label(self) -> str:
        """The name errors use: the wire name, or both when the families disagree ("cluster_name (queue)")."""
        names = [name for name in dict.fromkeys((self.dli, self.livy)) if name]
        return names[0] if len(names) == 1 else f"{names[0]} ({names[1]})"


def _copy_list(items: tuple) -> list:
    return copy.deepcopy(list(items))  # a wire body the caller may change without changing the spec


def _memory_field(attr: str, wire: str) -> _Field:
    return _Field(attr, wire, wire, _check_megabytes, parse=parse_memory, emit=format_memory)


def _duration_field(attr: str, livy: str) -> _Field:
    return _Field(attr, livy, None, parse_duration, emit=format_duration)


SPEC_FIELDS: tuple[_Field, ...] = (
    _Field("kind", "kind", "kind", normalize_kind),
    _Field("name", "name", "name", _check_name),
    _Field("cluster_name", "queue", "cluster_name", _check_string),
    _Field("sc_type", None, "sc_type", _check_sc_type),
    _memory_field("driver_memory_mb", "driverMemory"),
    _Field("driver_cores", "driverCores", "driverCores", parse_positive_int),
    _memory_field("executor_memory_mb", "executorMemory"),
    _Field("executor_cores", "executorCores", "executorCores", parse_positive_int),
    _Field("num_executors", "numExecutors", "numExecutors", parse_positive_int),
    _Field("conf", "conf", "conf", _check_conf, emit=dict),
    _Field("jars", "jars", "jars", _check_strings, emit=list),
    _Field("py_files", "pyFiles", "pyFiles", _check_strings, emit=list),
    _Field("files", "files", "files", _check_strings, emit=list),
    _Field("archives", "archives", None, _check_strings, emit=list),
    _Field("modules", None, "modules", _check_strings, emit=list),
    _Field("resources", None, "resources", _check_objects, emit=_copy_list),
    _Field("groups", None, "groups", _check_objects, emit=_copy_list),
    _Field("heartbeat_timeout_s", "heartbeatTimeoutInSecond", "heartbeatTimeoutInSecond", _check_heartbeat),
    _Field("proxy_user", "proxyUser", None, _check_string),
    _duration_field("ttl_s", "ttl"),
    _duration_field("idle_timeout_s", "idleTimeout"),
)
_RESOURCE_ATTRS = tuple(f.name for f in dataclasses.fields(Resources))
_FAMILY_TITLES = {"livy": "Livy", "dli": "DLI"}
_CLUSTER_REQUIRED = "cluster_name is required: the name of the cluster (queue) to run the session on."


def unknown_names(unknown: list[str], accepted: Iterable[str], noun: str = "field") -> str:
    """ "unknown field 'x'; accepted fields are: a, b" — the one wording for every unknown-name error."""
    names = ", ".join(repr(name) for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    return f"unknown {noun}{plural} {names}; accepted {noun}s are: {', '.join(accepted)}"


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# -- the spec ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SessionSpec:
    """A validated session request; resource fields left None fall back to the tier (``sc_type``)."""

    kind: str = "pyspark"
    name: str | None = None
    cluster_name: str | None = None
    sc_type: str | None = None
    driver_memory_mb: int | None = None
    driver_cores: int | None = None
    executor_memory_mb: int | None = None
    executor_cores: int | None = None
    num_executors: int | None = None
    # Left out of the repr: conf values can hold credentials (e.g. an object store key).
    conf: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    jars: tuple[str, ...] = ()
    py_files: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    resources: tuple[dict, ...] = ()
    groups: tuple[dict, ...] = ()
    heartbeat_timeout_s: int = 0
    proxy_user: str | None = None
    ttl_s: int | None = None
    idle_timeout_s: int | None = None

    def __post_init__(self) -> None:
        optional = {f.name for f in dataclasses.fields(self) if f.default is None}
        for spec_field in SPEC_FIELDS:
            value = getattr(self, spec_field.attr)
            if value is None and spec_field.attr in optional:
                continue
            object.__setattr__(self, spec_field.attr, spec_field.check(value, spec_field.label))

    # -- from and to the wire

    @classmethod
    def from_livy(cls, body: object) -> SessionSpec:
        """Parse a Livy ``POST /sessions`` body; ``kind`` may be left out (Livy 0.5+ shared sessions)."""
        values = cls._from_wire(body, "livy")
        if isinstance(values.get("kind"), str) and values["kind"].strip().lower() == "shared":
            values["kind"] = "pyspark"  # a shared session runs any kind per statement; Python is its default
        return cls(**values)

    @classmethod
    def from_dli(cls, body: object) -> SessionSpec:
        """Parse a DLI ``POST /v2.0/{project_id}/sessions`` body; kind and cluster_name are required."""
        values = cls._from_wire(body, "dli")
        if "kind" not in values:
            raise SpecError(f"kind is required: one of {', '.join(KINDS)}.")
        if "cluster_name" not in values:
            raise SpecError(_CLUSTER_REQUIRED)
        if "conf" in values:
            values["conf"] = conf_from_dli(values["conf"], "conf")
        return cls(**values)

    def updated(self, body: object) -> SessionSpec:
        """A copy with the fields of a create-session body applied, named as DLI or Livy names them."""
        try:
            values = self._from_wire(body, "dli")
        except SpecError as dli_error:
            try:
                values = self._from_wire(body, "livy")
            except SpecError:
                raise dli_error from None
        if "conf" in values:
            values["conf"] = {**self.conf, **_check_conf(conf_from_dli(values["conf"], "conf"), "conf")}
        return self.replace(**values)

    @staticmethod
    def _from_wire(body: object, family: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SpecError(f"the request body must be a JSON object (got {json_type(body)}).")
        by_wire = {getattr(f, family): f for f in SPEC_FIELDS if getattr(f, family)}
        unknown = sorted(str(key) for key in body if key not in by_wire)
        if unknown:
            raise SpecError(f"{unknown_names(unknown, sorted(by_wire))}.")
        values = {}
        for wire, value in body.items():
            if value is None:
                continue  # JSON null means "not given", as it does for Livy's own (Jackson) parser
            spec_field = by_wire[wire]
            values[spec_field.attr] = spec_field.parse(value, wire) if spec_field.parse else value
        return values

    def to_livy(self) -> dict[str, Any]:
        """The body for Livy's ``POST /sessions``.

        Livy has no resource tiers, so a tier is sent as the sizes it stands for; DLI's package fields
        (modules, resources, groups) have no Livy meaning and raise SpecError rather than vanish.
        """
        spec = self
        if self.sc_type is not None:
            spec = self.replace(sc_type=None, **dataclasses.asdict(self.effective_resources()))
        return spec._to_wire("livy")

    def to_dli(self) -> dict[str, Any]:
        """The body for DLI's ``POST /v2.0/{project_id}/sessions``; Livy-only fields raise SpecError."""
        if self.cluster_name is None:
            raise SpecError(_CLUSTER_REQUIRED)
        return self._to_wire("dli")

    def _to_wire(self, family: str) -> dict[str, Any]:
        body = {}
        for spec_field in SPEC_FIELDS:
            value = getattr(self, spec_field.attr)
            if not value:  # None, 0 and empty collections are all "unset"; kind is never empty
                continue
            wire = getattr(spec_field, family)
            if wire is None:
                raise SpecError(
                    f"{spec_field.label} cannot be sent to {_FAMILY_TITLES[family]}, which has no such field."
                )
            body[wire] = spec_field.emit(value) if spec_field.emit else value
        return body

    def replace(self, **changes: Any) -> SessionSpec:
        """A copy with ``changes`` applied, validated like any other spec."""
        return dataclasses.replace(self, **changes)

    # -- resources

    @property
    def tier(self) -> str:
        return self.sc_type or DEFAULT_TIER

    @property
    def customized(self) -> bool:
        return any(getattr(self, attr) is not None for attr in _RESOURCE_ATTRS)

    @property
    def reported_sc_type(self) -> str:
        """What DLI reports as ``sc_type``: the tier, or CUSTOMIZED once any size was overridden."""
        return "CUSTOMIZED" if self.customized else self.tier

    def effective_resources(self) -> Resources:
        overrides = {attr: getattr(self, attr) for attr in _RESOURCE_ATTRS if getattr(self, attr) is not None}
        return dataclasses.replace(TIERS[self.tier], **overrides)
