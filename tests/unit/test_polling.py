"""The one pacing rule of client-side waits, on a fake clock."""

from __future__ import annotations

import pytest

from dli_kernel.client.polling import MIN_WAIT, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(long_poll: bool, hold: float = 5.0, timeout: float | None = None) -> tuple[Pacer, Clock]:
    clock = Clock()
    return Pacer(long_poll, hold, timeout, clock=clock, sleep=clock.sleep), clock


def test_plain_polls_start_at_10_ms_and_grow_by_half_up_to_250_ms() -> None:
    pace, clock = pacer(long_poll=False)
    waits = [pace.pace() for _ in range(12)]
    assert waits == [None] * 12  # a plain server is never sent ?wait=
    grown = [0.01, 0.015, 0.0225, 0.03375, 0.050625, 0.0759375, 0.11390625, 0.170859375]
    assert clock.slept == pytest.approx([*grown, 0.25, 0.25, 0.25, 0.25])


def test_long_polls_never_sleep_and_hold_as_long_as_asked() -> None:
    pace, clock = pacer(long_poll=True, hold=0.25)
    assert [pace.pace() for _ in range(3)] == [0.25] * 3
    assert clock.slept == []


def test_a_deadline_shortens_the_last_sleep_and_the_last_hold() -> None:
    plain, clock = pacer(long_poll=False, timeout=0.03)
    while not plain.expired:
        plain.pace()
    assert sum(clock.slept) == pytest.approx(0.03) and plain.left == pytest.approx(0)

    held, clock = pacer(long_poll=True, hold=5.0, timeout=2.0)
    clock.now += 1.5
    assert held.pace() == pytest.approx(0.5) and not held.expired
    clock.now += 0.5
    assert held.expired and held.pace() == MIN_WAIT  # past the deadline: still a valid ?wait=


def test_without_a_timeout_nothing_expires() -> None:
    pace, clock = pacer(long_poll=False)
    clock.now += 1e6
    assert pace.left is None and not pace.expired and pace.elapsed == pytest.approx(1e6)
