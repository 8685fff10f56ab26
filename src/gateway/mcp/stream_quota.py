"""Bounds on the client streams one worker holds open (GET streams on `/mcp`, `/sse`
streams, `subscriptions/listen` streams): `MAX_STREAMS_PER_SESSION` for one session,
`MAX_STREAMS_PER_SUBJECT` for one caller and `MAX_STREAMS` for all callers together. Each
worker counts its own streams: a stream is a connection to one process, so the bounds are
per worker, not per gateway."""

from __future__ import annotations

from collections import Counter

from gateway import jsonrpc
from gateway.jsonrpc import RPCError


class StreamQuota:
    def __init__(self, per_session: int = 0, per_caller: int = 0, total: int = 0) -> None:
        self.per_session = per_session
        self.per_caller = per_caller
        self.total = total
        """0: no bound."""
        self._sessions: Counter[str] = Counter()
        self._callers: Counter[str] = Counter()
        self.open = 0

    def take(self, session: str | None, caller: str) -> None:
        """Count one more open stream; `RPCError` (HTTP 429, -32029) naming the bound when
        the session or the caller holds the most it may already."""
        if session is not None and self.per_session and self._sessions[session] >= self.per_session:
            raise _refused("MAX_STREAMS_PER_SESSION", self.per_session, "session")
        if self.per_caller and self._callers[caller] >= self.per_caller:
            raise _refused("MAX_STREAMS_PER_SUBJECT", self.per_caller, "caller")
        if self.total and self.open >= self.total:
            raise _refused("MAX_STREAMS", self.total, "worker")
        if session is not None:
            self._sessions[session] += 1
        self._callers[caller] += 1
        self.open += 1

    def give_back(self, session: str | None, caller: str) -> None:
        if session is not None:
            _decrement(self._sessions, session)
        _decrement(self._callers, caller)
        self.open -= 1


def _decrement(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


def _refused(setting: str, limit: int, whose: str) -> RPCError:
    if whose == "worker":
        message = (
            f"Too many streams: this worker holds {setting} ({limit}) open streams of all "
            "callers already; try again later"
        )
    else:
        message = (
            f"Too many streams: this {whose} holds {setting} ({limit}) open streams on this "
            "worker already; close one first"
        )
    error = RPCError(jsonrpc.RATE_LIMITED, message)
    error.status = 429
    return error
