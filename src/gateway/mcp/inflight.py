"""Bounds on the requests running at once in one worker (`MAX_INFLIGHT_PER_SESSION` for one
session, `MAX_INFLIGHT_PER_SUBJECT` for one caller, `MAX_INFLIGHT` for all callers
together, so that many callers cannot add up to more than a worker holds), on every
transport. Each worker counts its own: the bounds are per worker, not per gateway."""

from __future__ import annotations

from collections import Counter

from gateway.limits import RateLimited

RETRY_AFTER = 1
"""Seconds a refused client is told to wait: requests in flight end soon or time out."""


class TooManyInFlight(RateLimited):
    """Refused like a rate limit (-32029, HTTP 429 where HTTP carries it, Retry-After)."""

    def __init__(self, setting: str, limit: int, whose: str) -> None:
        where = "of all callers" if whose == "worker" else "on this worker"
        super().__init__(
            f"Too many requests in flight: this {whose} has {setting} ({limit}) running "
            f"{where} already; retry after {RETRY_AFTER}s",
            limit,
            RETRY_AFTER,
        )


class InFlight:
    def __init__(self, per_session: int = 0, per_caller: int = 0, total: int = 0) -> None:
        self.per_session = per_session
        self.per_caller = per_caller
        self.total = total
        """0: no bound."""
        self.sessions: Counter[str] = Counter()
        self.callers: Counter[str] = Counter()
        self.running = 0

    def enter(self, session: str | None, caller: str) -> None:
        """Count one more running request, or `TooManyInFlight`."""
        if session is not None and self.per_session and self.sessions[session] >= self.per_session:
            raise TooManyInFlight("MAX_INFLIGHT_PER_SESSION", self.per_session, "session")
        if self.per_caller and self.callers[caller] >= self.per_caller:
            raise TooManyInFlight("MAX_INFLIGHT_PER_SUBJECT", self.per_caller, "caller")
        if self.total and self.running >= self.total:
            raise TooManyInFlight("MAX_INFLIGHT", self.total, "worker")
        if session is not None:
            self.sessions[session] += 1
        self.callers[caller] += 1
        self.running += 1

    def leave(self, session: str | None, caller: str) -> None:
        if session is not None:
            _decrement(self.sessions, session)
        _decrement(self.callers, caller)
        self.running -= 1


def _decrement(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
