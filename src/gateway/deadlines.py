"""Time limits cheap enough for every call on the hot path.

`asyncio.timeout` arms an event-loop timer on entry and cancels it on exit; under uvloop
each is a libuv timer, and a tool call through the gateway needs two. Here one sweeper per
event loop checks every limit in force `TICK` times a second and cancels the tasks that
overran, so entering a limit costs a dict entry. A limit may fire up to `TICK` late, which
is nothing against limits of seconds (`TOOL_TIMEOUT`). Semantics are `asyncio.timeout`'s:
the overrunning block is cancelled and `TimeoutError` is raised from it, and a cancellation
from elsewhere passes through untouched.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType

TICK = 0.05
"""Seconds between sweeps: how late a limit may fire."""


class _Sweeper:
    """The limits in force on one event loop, checked by one timer that is armed only while
    a limit is in force (a timer, not a task: nothing is left pending when a loop closes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.limits: dict[int, within] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, limit: within) -> None:
        self.limits[id(limit)] = limit
        if self.timer is None:
            self.timer = self.loop.call_later(TICK, self._sweep)

    def remove(self, limit: within) -> None:
        self.limits.pop(id(limit), None)

    def _sweep(self) -> None:
        now = self.loop.time()
        for limit in list(self.limits.values()):
            if limit.when <= now and not limit.expired:
                limit.expire()
        self.timer = self.loop.call_later(TICK, self._sweep) if self.limits else None


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


class within:
    """`async with within(seconds):` bounds the block like `asyncio.timeout(seconds)`."""

    __slots__ = ("_cancelling", "_sweeper", "_task", "expired", "seconds", "when")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False

    async def __aenter__(self) -> within:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("within() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + self.seconds
        sweeper = _sweepers.get(loop)
        if sweeper is None:
            sweeper = _sweepers[loop] = _Sweeper(loop)
        self._sweeper = sweeper
        sweeper.add(self)
        return self

    def expire(self) -> None:
        self.expired = True
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._sweeper.remove(self)
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
