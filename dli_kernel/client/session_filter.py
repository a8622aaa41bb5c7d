"""Which sessions a listing shows: the filters of ``%session list`` and ``dli-kernel sessions list``.

One place for both, so a notebook and a shell always show the same sessions. The filters go to the server
as query parameters, and are applied again to what it answers: plain Livy ignores them, DLC matches names
loosely, and only the embedded server knows all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dli_kernel.client.models import SessionInfo
from dli_kernel.protocol import READY_STATES, SESSION_STATES
from dli_kernel.spec import SpecError, normalize_kind

# What --state accepts: every state a session can report (some Livy versions say `running` for busy).
KNOWN_STATES = (*SESSION_STATES, *(state for state in READY_STATES if state not in SESSION_STATES))


class Lister(Protocol):
    def list_sessions(self, **filters: str | int) -> list[SessionInfo]: ...


@dataclass(frozen=True)
class SessionFilter:
    """The sessions a listing keeps; an unset field keeps every session, but for ``states``: without it,
    only live sessions are kept, as the embedded server lists them (Livy and DLC list ended ones too)."""

    states: tuple[str, ...] = ()
    kind: str | None = None
    name: str | None = None  # a part of the name, in any case (as the embedded server matches it)
    id: str | None = None
    cluster: str | None = None
    owner: str | None = None

    @classmethod
    def parse(
        cls,
        state: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        id: str | None = None,
        cluster: str | None = None,
        owner: str | None = None,
    ) -> SessionFilter:
        """The filter of the options as typed; an unknown state or kind raises SpecError (one sentence),
        before any request is sent."""
        states = tuple(dict.fromkeys(s.strip().lower() for s in (state or "").split(",") if s.strip()))
        unknown = [s for s in states if s not in KNOWN_STATES]
        if unknown:
            raise SpecError(
                f"state must be one or more of {', '.join(KNOWN_STATES)}, comma-separated "
                f"(got {unknown[0]!r})."
            )
        return cls(
            states=states,
            kind=normalize_kind(kind) if kind else None,
            name=name or None,
            id=id or None,
            cluster=cluster or None,
            owner=owner or None,
        )

    @classmethod
    def from_args(cls, parsed: Any) -> SessionFilter:
        """The filter of parsed ``--state --kind --name --id --cluster --owner`` options."""
        return cls.parse(
            state=parsed.state,
            kind=parsed.kind,
            name=parsed.name,
            id=parsed.id,
            cluster=parsed.cluster,
            owner=parsed.owner,
        )

    @property
    def empty(self) -> bool:
        return self == SessionFilter()

    def query(self) -> dict[str, str]:
        """What the server is asked to filter by (``SessionsClient.list_sessions``' keywords)."""
        params = {
            "state": ",".join(self.states),
            "kind": self.kind,
            "name": self.name,
            "cluster_name": self.cluster,
            "owner": self.owner,
        }
        return {key: value for key, value in params.items() if value}

    def matches(self, info: SessionInfo) -> bool:
        return (
            (info.state in self.states if self.states else not info.ended)
            and (not self.kind or _kind(info.kind) == self.kind)
            and (not self.name or self.name.lower() in (info.name or "").lower())
            and (not self.id or str(info.id) == self.id)
            and (not self.cluster or cluster_of(info) == self.cluster)
            and (not self.owner or info.owner == self.owner)
        )


def add_arguments(parser: Any) -> None:
    """The filter options, on an ``argparse`` parser: one list of them for both commands."""
    parser.add_argument(
        "--state",
        metavar="STATES",
        help="comma-separated states, such as idle,busy or killed (default: the live ones)",
    )
    parser.add_argument("--kind", metavar="KIND", help="pyspark, spark or sql")
    parser.add_argument("--name", metavar="TEXT", help="a part of the name, in any case")
    parser.add_argument("--id", metavar="ID", help="the session's id")
    parser.add_argument("--cluster", metavar="NAME", help="the cluster (DLI queue, DLC engine) they run on")
    parser.add_argument("--owner", metavar="USER", help="who created them")


def matching_sessions(client: Lister, wanted: SessionFilter) -> list[SessionInfo]:
    """The sessions on ``client``'s endpoint that ``wanted`` keeps, in the server's order."""
    return [info for info in client.list_sessions(**wanted.query()) if wanted.matches(info)]


def cluster_of(info: SessionInfo) -> str | None:
    """The cluster (DLI's queue, DLC's engine) a session runs on, as the server names it."""
    return info.raw.get("cluster_name") or info.raw.get("queue")


def _kind(kind: str | None) -> str | None:
    try:
        return normalize_kind(kind)
    except SpecError:  # a kind this package does not run (Livy's sparkr, shared): matches none of ours
        return kind
