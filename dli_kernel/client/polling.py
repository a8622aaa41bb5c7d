"""How often to ask again: the one pacing rule for every client-side wait (a statement, a session start).

A server that lists the ``wait`` extension holds each GET until something changes, so the next request
goes out at once with ``?wait=``; any other server is asked again after a short sleep that starts at
10 ms (most statements finish within milliseconds) and grows by x1.5 up to 250 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_POLL, POLL_GROWTH, MAX_POLL = 0.01, 1.5, 0.25
MIN_WAIT = 0.01  # the shortest ``?wait=`` worth sending when a deadline is near


class Pacer:
    """The pace of one wait; call ``pace()`` before each request after the first."""

    def __init__(
        self,
        long_poll: bool,
        hold: float,
        timeout: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``long_poll``: the server holds GETs given ``?wait=``, for up to ``hold`` seconds each;
        ``timeout``: seconds the whole wait may take (None: no limit)."""
        self.long_poll = long_poll
        self.hold = hold
        self._clock, self._sleep = clock, sleep
        self.began = clock()
        self._deadline = None if timeout is None else self.began + timeout
        self._interval = FIRST_POLL

    @property
    def elapsed(self) -> float:
        return self._clock() - self.began

    @property
    def left(self) -> float | None:
        """Seconds before the deadline (negative once past), or None without one."""
        return None if self._deadline is None else self._deadline - self._clock()

    @property
    def expired(self) -> bool:
        left = self.left
        return left is not None and left <= 0

    def pace(self) -> float | None:
        """Wait before the next request as the server needs; the ``wait`` to send with it (None: none).

        Never sleeps past the deadline, and never asks a long-poll to outlast it.
        """
        left = self.left
        if self.long_poll:
            return self.hold if left is None else max(MIN_WAIT, min(self.hold, left))
        self._sleep(self._interval if left is None else max(0.0, min(self._interval, left)))
        self._interval = min(self._interval * POLL_GROWTH, MAX_POLL)
        return None
