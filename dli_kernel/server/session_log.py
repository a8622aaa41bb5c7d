"""A session's log (``driver.log``): the driver's and the JVM's output, and the server's own lines.

With INFO logging the file grows without bound and every session GET shows its last lines, so reading
never starts over: an index of line ends is kept, extended with only the bytes written since the last read,
and a request reads just the lines it returns.
"""

from __future__ import annotations

import bisect
import os
import re
import threading
import time
from array import array
from pathlib import Path
from typing import BinaryIO

# Bytes besides "\n" after which str.splitlines() also ends a line (in UTF-8: \v \f \r \x1c-\x1e, NEL,
# LINE SEPARATOR, PARAGRAPH SEPARATOR). A line holding one of them is decoded and counted; others count 1.
_OTHER_BREAKS = re.compile(rb"[\x0b\x0c\r\x1c\x1d\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")


class SessionLog:
    """Appends the server's lines to the log and reads lines back as ``str.splitlines()`` of the whole file
    would give them, the file decoded as UTF-8 with bad bytes replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self._inode = inode
        self._ends = array("q")  # byte offset just past each "\n"
        self._lines = array("q")  # lines in the file up to and including each "\n"
        self._indexed = 0  # bytes covered by the index
        self._tail: list[str] = []  # the lines after the last "\n", as last read
        self._size = 0  # the file's size when last read

    def append(self, message: str) -> None:
        stamp = time.strftime("%y/%m/%d %H:%M:%S")
        with open(self.path, "a") as log_file:
            log_file.write(f"{stamp} INFO dli-kernel: {message}\n")

    def size(self) -> int:
        """The log's size in bytes: it says whether there are new lines without reading them."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def lines(self, start: int | None = None, size: int = 100) -> tuple[int, int, list[str]]:
        """(from, total, lines) of the log; no ``start`` means the last ``size`` lines."""
        with self._lock:
            try:
                with open(self.path, "rb") as log_file:
                    self._refresh(log_file)
                    total = self._total()
                    if start is None:
                        start = max(0, total - size)
                    return start, total, self._read(log_file, start, min(start + size, total))
            except OSError:
                self._reset(None)
                return (0 if start is None else start), 0, []

    def _total(self) -> int:
        return (self._lines[-1] if self._lines else 0) + len(self._tail)

    def _refresh(self, log_file: BinaryIO) -> None:
        """Index what was written since the last read; start over if the file was replaced or cut."""
        stat = os.fstat(log_file.fileno())
        if stat.st_ino != self._inode or stat.st_size < self._size:
            self._reset(stat.st_ino)
        self._size = stat.st_size
        if stat.st_size == self._indexed:
            return
        log_file.seek(self._indexed)
        new = log_file.read(stat.st_size - self._indexed)
        self._size = self._indexed + len(new)
        counted = self._lines[-1] if self._lines else 0
        begin = 0
        end = new.find(b"\n")
        while end >= 0:
            line = new[begin : end + 1]
            counted += len(_decode(line).splitlines()) if _OTHER_BREAKS.search(line) else 1
            self._ends.append(self._indexed + end + 1)
            self._lines.append(counted)
            begin, end = end + 1, new.find(b"\n", end + 1)
        self._indexed += begin
        self._tail = _decode(new[begin:]).splitlines()

    def _read(self, log_file: BinaryIO, start: int, stop: int) -> list[str]:
        """Lines ``start`` up to ``stop`` (exclusive), reading only the bytes that hold them."""
        if start >= stop:
            return []
        first = bisect.bisect_right(self._lines, start)  # the "\n"-ended piece holding line `start`
        if first == len(self._lines):  # all in the tail
            skip = start - (self._lines[-1] if self._lines else 0)
            return self._tail[skip : skip + stop - start]
        last = bisect.bisect_right(self._lines, stop - 1)
        begin = self._ends[first - 1] if first else 0
        end = self._ends[last] if last < len(self._ends) else self._indexed
        log_file.seek(begin)
        found = _decode(log_file.read(end - begin)).splitlines()
        if last == len(self._ends):
            found += self._tail
        skip = start - (self._lines[first - 1] if first else 0)
        return found[skip : skip + stop - start]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
