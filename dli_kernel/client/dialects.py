"""How each backend spells the uniform calls: where the paths live and what a create body holds.

The statement, log, cancel and completion calls have Livy's shape on every backend we speak; what differs
is the path prefix, the create body's field names, and whether the embedded server's extensions exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dli_kernel.client.errors import ConfigError
from dli_kernel.spec import SessionSpec

DIALECTS = ("livy", "dli", "local")
LOCAL_PROJECT = "local"
LOCAL_CLUSTER = "local"


@dataclass(frozen=True)
class Dialect:
    name: str
    prefix: str
    # The embedded server's additions: `maxRows` on statements, list filters by state, kind and owner.
    extensions: bool = False

    def create_body(self, spec: SessionSpec) -> dict[str, Any]:
        if self.name == "livy":
            return spec.to_livy()
        if self.name == "local" and not spec.cluster_name:
            spec = spec.replace(cluster_name=LOCAL_CLUSTER)
        return spec.to_dli()

    def statement_body(self, code: str, kind: str | None, max_rows: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code}
        if kind:
            body["kind"] = kind
        if max_rows is not None and self.extensions:
            body["maxRows"] = max_rows
        return body


def make_dialect(name: str, project_id: str | None = None) -> Dialect:
    """The dialect called ``name``; DLI needs the project id its paths carry."""
    if name == "livy":
        return Dialect("livy", "")
    if name == "dli":
        if not project_id:
            raise ConfigError(
                "the dli dialect needs a project id (DLI_KERNEL_PROJECT_ID or project_id in the config)."
            )
        return Dialect("dli", f"/v2.0/{project_id}")
    if name == "local":
        return Dialect("local", f"/v2.0/{LOCAL_PROJECT}", extensions=True)
    raise ConfigError(f"dialect must be one of {', '.join(DIALECTS)} (got {name!r}).")
