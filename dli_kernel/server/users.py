"""Who may use the server: one token for one person (the default), or a users file for a team.

``Users.bearer`` maps the token of a request (``Authorization: Bearer`` or DLI's ``X-Auth-Token``) to
its :class:`Principal`, or None; ``Users.dlc_key`` gives the key a DLC request's signature is checked with;
``Users.named`` finds a user by name (a browser link's, see ``dli_kernel.server.links``).

The users file, which the ``dli-kernel users`` commands write, is a JSON object::

    {"users": [
      {"name": "alice", "token_sha256": "<64 hex digits>", "max_sessions": 2},
      {"name": "bob", "token_sha256": "<64 hex digits>", "admin": true}
    ]}

``name`` is 1 to 64 of ``A-Z a-z 0-9 . _ @ -``, unique; ``token_sha256`` the SHA-256 (lowercase hex) of the
user's token; ``admin`` (default false) sees and touches every session; ``max_sessions`` (optional, 0 or
more) is how many live sessions the user may hold, in place of the server's ``--max-sessions-per-user``.
The file holds no secret, but it says who may use the server: one that other OS users can write is refused.

DLC signs requests (TC3-HMAC-SHA256) with a key the server must hold itself, which a hash cannot give. A
user's DLC SecretId is their name and their SecretKey is ``HMAC-SHA256(server secret, name ":" token
hash)``, the server secret being a random file in the state dir (``dlc-secret``, mode 0600): the users file
still holds no secret, a new token gives a new DLC key, and removing the user revokes both.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dli_kernel.server.principal import Principal
from dli_kernel.server.secret_file import SecretFileError, secret_file, untrusted

log = logging.getLogger("dli_kernel.server")

TOKEN_BYTES = 32  # 256 bits: secrets.token_urlsafe(32) is 43 characters
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
NAME_RULE = "1 to 64 of the characters A-Z a-z 0-9 . _ @ -"
_HASH = re.compile(r"[0-9a-f]{64}")
USER_KEYS = ("name", "token_sha256", "admin", "max_sessions")
CHECK_EVERY = 1.0  # seconds between looks at the users file's mtime: a new user works within about this


class Users(Protocol):
    def bearer(self, token: str) -> Principal | None:
        """The user whose token this is, or None."""
        ...

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        """The SecretKey that a DLC request signed with this SecretId must be signed with, and who signs
        with it; None for a SecretId nobody has."""
        ...

    def named(self, name: str) -> Principal | None:
        """The user called ``name`` as the server knows them now (their admin flag included); None once
        they can no longer use it. A browser link names its user, who is looked up at each request."""
        ...


class SingleToken:
    """The one-person server: its token opens everything, as the server's OS user, an admin."""

    def __init__(self, token: str, owner: str) -> None:
        self._token = token.encode()
        self._principal = Principal(owner, admin=True)

    def __repr__(self) -> str:
        return f"SingleToken(owner={self._principal.name!r})"

    @property
    def name(self) -> str:
        return self._principal.name

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        # One person's server: the token is the SecretKey, and the SecretId names who signs (the kernel
        # sends the OS user's name), so that DLC's creator field says who made a session.
        return self._token.decode(), Principal(secret_id, admin=True)

    def named(self, name: str) -> Principal | None:
        return self._principal if name == self._principal.name else None

    def bearer(self, token: str) -> Principal | None:
        # Constant time: how long a refusal takes says nothing about how much of the token was right.
        if token and hmac.compare_digest(token.encode(), self._token):
            return self._principal
        return None


# -- the users file ---------------------------------------------------------------------------------


class UsersFileError(ValueError):
    """A users file or DLC secret that cannot be used; the message is one sentence that names the file."""


@dataclass(frozen=True)
class User:
    """One line of the users file. Its repr leaves out the token's hash."""

    name: str
    token_sha256: str = field(repr=False)
    admin: bool = False
    max_sessions: int | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.name, admin=self.admin, max_sessions=self.max_sessions)

    @property
    def role(self) -> str:
        return "admin" if self.admin else "user"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "token_sha256": self.token_sha256}
        if self.admin:
            entry["admin"] = True
        if self.max_sessions is not None:
            entry["max_sessions"] = self.max_sessions
        return entry


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    # A fast hash is right here, unlike for passwords: every token is 256 random bits, so no guess of one
    # can be checked against its hash faster than by trying all 2**256, and a slow hash would only slow
    # every request down.
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if isinstance(name, str) and NAME.fullmatch(name):
        return name
    raise UsersFileError(f"a user name is {NAME_RULE} (got {name!r}).")


def _user(entry: object, where: str) -> User:
    if not isinstance(entry, dict):
        raise UsersFileError(f'{where} must be an object such as {{"name": "alice", "token_sha256": ...}}.')
    unknown = sorted(str(key) for key in entry if key not in USER_KEYS)
    if unknown:
        raise UsersFileError(f"{where} has unknown keys {unknown}; a user has {', '.join(USER_KEYS)}.")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsersFileError(f"{where}: name must be {NAME_RULE} (got {name!r}).")
    digest = entry.get("token_sha256")
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise UsersFileError(
            f"{where} ({name}): token_sha256 must be 64 lowercase hex digits, the SHA-256 of the user's "
            "token (its value is not shown)."
        )
    admin = entry.get("admin", False)
    if not isinstance(admin, bool):
        raise UsersFileError(f"{where} ({name}): admin must be true or false (got {admin!r}).")
    limit = entry.get("max_sessions")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise UsersFileError(
            f"{where} ({name}): max_sessions must be a whole number, 0 or more (got {limit!r})."
        )
    return User(name, digest, admin, limit)


def parse_users(text: str, path: Path) -> tuple[User, ...]:
    """The users of a users file's text; UsersFileError says what is wrong (never a hash's value)."""
    try:
        document = json.loads(text) if text.strip() else {"users": []}
    except json.JSONDecodeError as err:
        raise UsersFileError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}."
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("users"), list) or len(document) != 1:
        raise UsersFileError(f'{path} must hold one JSON object {{"users": [...]}}, a list of users.')
    users = tuple(_user(entry, f"{path}: users[{index}]") for index, entry in enumerate(document["users"]))
    names: set[str] = set()
    digests: set[str] = set()
    for user in users:
        if user.name in names:
            raise UsersFileError(f"{path} names user {user.name!r} twice; user names must be unique.")
        if user.token_sha256 in digests:
            raise UsersFileError(
                f"{path}: user {user.name!r} has the same token as another user; give each user their own "
                f"(dli-kernel users rotate {user.name})."
            )
        names.add(user.name)
        digests.add(user.token_sha256)
    return users


def _signature(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is edited, replaced or chmod-ed."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)


def _check_owner_and_mode(path: Path, st: os.stat_result) -> None:
    """Refuse a file someone else could have written; warn when others can read it."""
    problem = untrusted(path, st, ", who could make themselves admins")
    if problem:
        raise UsersFileError(problem)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o044:
        log.warning(
            "%s can be read by other OS users (mode %04o): it holds no tokens, but chmod 600 keeps who may "
            "use the server private.",
            path,
            mode,
        )


def _read(path: Path) -> tuple[tuple[User, ...], tuple[int, ...]]:
    """The users of ``path`` and the file's signature, read from one open file."""
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            _check_owner_and_mode(path, st)
            raw = handle.read()
    except FileNotFoundError:
        raise UsersFileError(
            f"there is no users file at {path}: make one with 'dli-kernel users add NAME --users {path}'."
        ) from None
    except OSError as err:
        raise UsersFileError(f"{path} cannot be read: {err.strerror or type(err).__name__}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsersFileError(f"{path} is not UTF-8 text, which a JSON users file must be.") from None
    return parse_users(text, path), _signature(st)


def read_users(path: Path, missing_ok: bool = False) -> tuple[User, ...]:
    """The users of the file at ``path``; with ``missing_ok``, none when there is no file."""
    if missing_ok and not path.exists():
        return ()
    return _read(path)[0]


def write_users(path: Path, users: tuple[User, ...] | list[User]) -> None:
    """Replace the file at once (a server reading it sees the old or the new one, never half), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps({"users": [user.to_json() for user in users]}, indent=2) + "\n"
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def editing(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-change-write of the users file: two commands at once lose none."""
    import fcntl  # POSIX only, as the server is

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The folder's lock, not the file's: the file is replaced on every write, and a lock file would be
    # one more file to explain.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- DLC keys ---------------------------------------------------------------------------------------


def dlc_secret(path: Path) -> bytes:
    """The server secret users' DLC keys derive from; made (random, mode 0600) if there is none yet."""
    try:
        return secret_file(path, "a DLC secret", ", which changes every user's DLC key")
    except SecretFileError as err:
        raise UsersFileError(str(err)) from None


def derive_dlc_key(secret: bytes, user: User) -> str:
    """The user's DLC SecretKey: only the server (holding the secret) and the user can know it."""
    message = f"{user.name}:{user.token_sha256}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


# -- the server's view of the file ------------------------------------------------------------------


class UsersFile:
    """The users of a users file, re-read when it changes; with ``operator``, the server's own token
    (server.json's) opens everything too, as the admin named after the server's OS user.

    A file that cannot be used raises UsersFileError here, at startup. A later edit that cannot be used is
    logged and the users read before stay, so a slip while editing locks nobody out (and lets nobody in).
    ``dlc_secret`` (see :func:`dlc_secret`) gives users DLC keys; without it only the operator has one.
    """

    def __init__(
        self,
        path: Path,
        operator: SingleToken | None = None,
        dlc_secret: bytes | None = None,
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(path)
        self._operator = operator
        self._dlc_secret = dlc_secret
        self._check_every = check_every
        self._clock = clock
        self._lock = threading.Lock()
        self._users, self._seen = self._load()
        self._checked = clock()

    def __repr__(self) -> str:
        return f"UsersFile({str(self._path)!r}, users={len(self._users)})"

    @property
    def users(self) -> tuple[User, ...]:
        return self._current()

    def bearer(self, token: str) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        found = None
        for user in self._current():  # every user, match or not: the time taken says nothing
            if hmac.compare_digest(digest, user.token_sha256):
                found = user
        operator = self._operator.bearer(token) if self._operator is not None else None
        return operator or (found.principal if found is not None else None)

    def named(self, name: str) -> Principal | None:
        # The operator is no line of the file: their token is server.json's.
        for user in self._current():
            if user.name == name:
                return user.principal
        return self._operator.named(name) if self._operator is not None else None

    def dlc_key(self, secret_id: str) -> tuple[str, Principal] | None:
        for user in self._current():
            if user.name == secret_id:
                if self._dlc_secret is None:
                    return None
                return derive_dlc_key(self._dlc_secret, user), user.principal
        # A SecretId that names no user: the operator's token signs, as SingleToken's does.
        return self._operator.dlc_key(secret_id) if self._operator is not None else None

    def _load(self) -> tuple[tuple[User, ...], tuple[int, ...]]:
        users, seen = _read(self._path)
        if self._operator is not None and any(user.name == self._operator.name for user in users):
            raise UsersFileError(
                f"{self._path} has a user named {self._operator.name!r}, the server's own OS user, whose "
                "token is the one in server.json; give that user another name."
            )
        return users, seen

    def _current(self) -> tuple[User, ...]:
        now = self._clock()
        if now - self._checked < self._check_every:
            return self._users
        with self._lock:
            if now - self._checked >= self._check_every:
                self._checked = now
                self._reload_if_changed()
            return self._users

    def _reload_if_changed(self) -> None:
        try:
            seen = _signature(self._path.stat())
        except OSError:
            seen = ()  # gone, or not ours to see: reading it says why
        if seen == self._seen:
            return
        try:
            self._users, self._seen = self._load()
        except UsersFileError as err:
            # Noted as seen: the warning comes once per change, not once a second.
            self._seen = seen
            log.warning(
                "%s The server keeps the %d users it had until the file is fixed.", err, len(self._users)
            )
            return
        log.info("re-read %s: %d users", self._path, len(self._users))
