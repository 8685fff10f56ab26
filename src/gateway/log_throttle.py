"""At most one log line per key and interval for events an upstream can cause at any rate
(dropped notifications, dropped requests), with the number of events it stands for, so a
flood cannot flood the log too."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

INTERVAL = 10.0
"""Seconds between two lines about the same key."""
KEYS_MAX = 1024
"""Keys remembered at once; past it the oldest are forgotten (and log at once again)."""


class LogThrottle:
    def __init__(
        self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}
        """Per key: when its last line was written, and the events since."""

    def __len__(self) -> int:
        """The keys remembered."""
        return len(self._last)

    def count(self, key: Hashable) -> int:
        """Count one event; the number of events the line to write now stands for, or 0
        when no line is due (the first event of a key always logs)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return 0
        if last is None and len(self._last) >= KEYS_MAX:
            del self._last[next(iter(self._last))]
        self._last[key] = (now, 0)
        return 1 if last is None else last[1] + 1
