"""A random key the server keeps in a file of its state dir (mode 0600): the DLC secret users' keys derive
from, the key browser links are signed with. Read if it is there, else made, so that what it signed
outlives a restart."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

KEY_BYTES = 32


class SecretFileError(ValueError):
    """A key file that cannot be used; the message names the file (never its content) and the fix."""


def secret_file(path: Path, what: str, on_remove: str = "") -> bytes:
    """The key at ``path`` (its hex digits), made there first if there is none.

    ``what`` names the key in messages ("a link key"); ``on_remove`` says what a new key would change."""
    try:
        return _read(path, what, on_remove)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    except OSError as err:
        raise SecretFileError(f"{path} cannot be made: {err.strerror or type(err).__name__}.") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(KEY_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # Linking fails if another process made the file first: then theirs is the key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except OSError as err:
        raise SecretFileError(f"{path} cannot be made: {err.strerror or type(err).__name__}.") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return _read(path, what, on_remove)


def _read(path: Path, what: str, on_remove: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            _check_private(path, os.fstat(handle.fileno()))
            value = handle.read().strip()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise SecretFileError(f"{path} cannot be read: {err.strerror or type(err).__name__}.") from None
    if not re.fullmatch(rb"[0-9a-f]{64,}", value):
        raise SecretFileError(
            f"{path} is not {what} (64 or more hex digits): remove it to have a new one made{on_remove}."
        )
    return value


def untrusted(path: Path, st: os.stat_result, risk: str = "") -> str | None:
    """Why a file the server trusts (a key, the users file) must not be used: another OS user owns it, or
    others can write it (``risk`` says what they could do then); None if neither."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.getuid(), 0):
        owner = f"another OS user (uid {st.st_uid})"
        return f"{path} belongs to {owner}; the server trusts only its own or root's."
    if mode & 0o022:
        return f"{path} can be written by other OS users (mode {mode:04o}){risk}: chmod 600 {path}."
    return None


def _check_private(path: Path, st: os.stat_result) -> None:
    """Refuse a key someone else could have written or can read."""
    problem = untrusted(path, st)
    if problem:
        raise SecretFileError(problem)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o044:
        raise SecretFileError(f"{path} can be read by other OS users (mode {mode:04o}): chmod 600 {path}.")
