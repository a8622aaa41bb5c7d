"""``SessionHolder``: what one notebook (or IPython) holds: its endpoint, the spec of its next session,
and the session it uses now.

The magics and the wrapper kernel share one; it owns the rules of replacing a session (configure,
restart, ``use``) so that no session the notebook started is ever left behind.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable

from dli_kernel.client import SessionInfo, SessionsClient
from dli_kernel.config import Settings, load_settings
from dli_kernel.embedded import embedded_endpoint
from dli_kernel.kernel.remote_session import Progress, RemoteSession, SessionFailed
from dli_kernel.kernel.spark_log import checked_level
from dli_kernel.spec import SessionSpec


class SessionHolder:
    """The notebook's side of its sessions. Nothing touches the network until a session is asked for."""

    def __init__(
        self, kind: str | None = None, settings_loader: Callable[[], Settings] = load_settings
    ) -> None:
        self._kind = kind  # None: the configured default kind
        self._load_settings = settings_loader
        self._client: SessionsClient | None = None
        self._spec: SessionSpec | None = None
        self.endpoint_source = ""
        self.session: RemoteSession | None = None
        self.replaced_note = ""  # said by the next cell: why it runs on a new session
        self._log_level: str | None = None  # None: the configured one, read when first needed
        self._lock = threading.RLock()  # the kernel starts the session from a thread of its own

    # -- where sessions go ---------------------------------------------------------------------

    def _connect(self) -> tuple[SessionsClient, SessionSpec]:
        if self._client is None or self._spec is None:
            settings = self._load_settings()
            endpoint = settings.endpoint or embedded_endpoint(
                dialect=settings.embedded_dialect, region=settings.region
            )
            defaults = settings.defaults
            self._spec = defaults if self._kind is None else defaults.replace(kind=self._kind)
            self._client = endpoint.client()
            self.endpoint_source = settings.source
            if self._log_level is None:
                self._log_level = settings.log_level
        return self._client, self._spec

    @property
    def client(self) -> SessionsClient:
        return self._connect()[0]

    @property
    def kind(self) -> str:
        """The kind of the notebook's plain cells."""
        return self._kind or self.spec.kind

    @property
    def spec(self) -> SessionSpec:
        """What the next session this notebook starts will be."""
        return self._connect()[1]

    @spec.setter
    def spec(self, spec: SessionSpec) -> None:
        self._spec = spec

    @property
    def log_level(self) -> str:
        """How much of the session's log a cell shows while it runs: one of ``LOG_LEVELS``."""
        if self._log_level is None:
            self._log_level = self._load_settings().log_level  # the settings only: no endpoint is sought
        return self._log_level

    @log_level.setter
    def log_level(self, level: str) -> None:
        self._log_level = checked_level(level)

    # -- its session ---------------------------------------------------------------------------

    def start(self) -> RemoteSession:
        """The current session; a new one is asked for (in the background) when there is none."""
        with self._lock:
            if self.session is None:
                spec = self.spec
                # A name of its own lets the client find the session again after an ambiguous create.
                self.session = RemoteSession(self.client, spec.replace(name=spec.name or _fresh_name()))
                self.session.start()
            return self.session

    def start_in_background(self) -> None:
        """Start connecting at once without blocking: finding the embedded server may take seconds.

        A failure here is not lost: the next ``start`` meets it again and reports it.
        """

        def start() -> None:
            with contextlib.suppress(Exception):
                self.start()

        threading.Thread(target=start, name="dli-session-start", daemon=True).start()

    def ready(self, on_state: Callable[[Progress], None] | None = None) -> RemoteSession:
        """The current session once it is ready; a session that failed to start is dropped."""
        session = self.start()
        try:
            session.wait_ready(on_state=on_state)
        except SessionFailed:
            self.drop()
            raise
        return session

    def drop(self, note: str = "") -> None:
        """Stop using the current session: delete it if this notebook started it."""
        with self._lock:
            session, self.session = self.session, None
        if session is not None:
            session.close()
        self.replaced_note = note

    def replace(self, spec: SessionSpec | None = None) -> RemoteSession:
        """Drop the current session and start a new one, with ``spec`` if given."""
        if spec is not None:
            self.spec = spec
        self.drop()
        return self.start()

    def attach(self, session_id: str) -> SessionInfo:
        """Use an existing session; the one this notebook started (if any) is deleted."""
        info = self.client.get_session(session_id)
        if info.ended:
            raise SessionFailed(f"session {info.id} has ended (state {info.state}); nothing changed.")
        self.drop()
        self.session = RemoteSession.attach(self.client, info, self.spec.replace(kind=info.kind or self.kind))
        return info

    def close(self) -> None:
        self.drop()
        if self._client is not None:
            self._client.close()
            self._client = None

    def is_mine(self, session_id: str) -> bool:
        session = self.session
        return session is not None and session.info is not None and str(session.info.id) == str(session_id)


def _fresh_name() -> str:
    return f"notebook-{uuid.uuid4().hex[:12]}"
