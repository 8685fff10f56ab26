"""A flood of events an upstream causes makes one log line per key and interval, and that
line counts every event it stands for."""

from __future__ import annotations

from gateway.log_throttle import KEYS_MAX, LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_event_logs_and_the_next_line_counts_what_came_meanwhile() -> None:
    clock = Clock()
    throttle = LogThrottle(interval=10.0, clock=clock)
    assert throttle.count("up") == 1
    assert [throttle.count("up") for _ in range(999)] == [0] * 999
    clock.now = 10.0
    assert throttle.count("up") == 1000  # the 999 held back and this one
    assert throttle.count("up") == 0


def test_keys_are_throttled_apart() -> None:
    throttle = LogThrottle(interval=10.0, clock=Clock())
    assert (throttle.count("a"), throttle.count("b"), throttle.count("a")) == (1, 1, 0)


def test_the_keys_remembered_are_bounded() -> None:
    throttle = LogThrottle(interval=10.0, clock=Clock())
    for key in range(KEYS_MAX + 10):
        assert throttle.count(key) == 1
    assert len(throttle) == KEYS_MAX
    assert throttle.count(0) == 1  # forgotten: it logs at once again
