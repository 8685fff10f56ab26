"""A link: one MCP session as its transport carries it (an HTTP session id, an open event
stream), with the requests waiting on it; and what a transport reports about it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from gateway.contracts import JSON, AskClient, BackendError, Notify

# Reopening a server-to-client stream: the first wait, doubling up to the last.
RECONNECT_MIN = 0.25
RECONNECT_MAX = 30.0


class MessageRefused(BackendError):
    """The upstream refused a message outright, so there is no request of ours for it to
    cancel."""


class SessionExpired(MessageRefused):
    """The upstream no longer knows the session a message was sent in (HTTP 404)."""

    def __init__(self, upstream: str, method: str) -> None:
        super().__init__(f"upstream {upstream!r} answered HTTP 404 to {method}: no such session")


@dataclass(frozen=True, slots=True)
class SessionState:
    """What a client needs to carry on a session another client opened, without a
    handshake."""

    session_id: str | None
    protocol_version: str
    capabilities: JSON


@dataclass(slots=True, eq=False)
class Call:
    """One request on its way upstream, with what routes its notifications, answers the
    requests the upstream sends its client about it, and cancels it."""

    method: str
    params: JSON | None
    on_notification: Notify | None = None
    on_request: AskClient | None = None
    request_id: int | None = None
    """Set when the request goes out (None again if the upstream refused it)."""
    link: Link | None = None
    reply: asyncio.Future[JSON] = field(init=False)
    """Made for each attempt; the transport's reader settles it."""
    shown_token: Any = None
    """The progress token the caller sees where the request went out with one of ours."""
    answered: bool = False
    asking: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    """The upstream's requests about this one still being answered; abandoned with it."""


class Link:
    """One MCP session as its transport carries it; transports subclass it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session_id: str | None = None
        """Set once messages name the session, so that a 404 to them means it is gone."""
        self.capabilities: JSON = {}
        self.pending: dict[int, Call] = {}
        self.progress: dict[str, Call] = {}
        """Our progress tokens, where one stream carries every request's notifications."""
        self.lost: str | None = None
        """Why the link ended (`upstream 'x' <lost> before answering ...`), once it has."""
        self.ended = asyncio.Event()

    def initialised(self, protocol_version: str, capabilities: JSON) -> None:
        self.capabilities = capabilities

    def resume(self, state: SessionState) -> None:
        """Carry on a session that was opened on another link."""
        self.session_id = state.session_id
        self.initialised(state.protocol_version, state.capabilities)

    def end(self, reason: str) -> None:
        """Give up on the link: fail the requests still waiting on it."""
        if self.lost is None:
            self.lost = reason
        for call in self.pending.values():
            if not call.reply.done():
                call.reply.set_exception(
                    BackendError(
                        f"upstream {self.upstream!r} {self.lost} before answering {call.method}"
                    )
                )
        self.ended.set()


class ListenOutcome(Enum):
    NO_STREAM = auto()
    """The upstream offers no server-to-client stream: stop trying."""
    EXPIRED = auto()
    """The upstream no longer knows the session: renew it, then listen again."""
    ENDED = auto()


@dataclass(slots=True)
class Backoff:
    """The waits between attempts to reopen one link's stream."""

    least: float = 0.0
    """The server's `retry`: a least wait, which our backoff may exceed."""
    delay: float = RECONNECT_MIN

    def reset(self) -> None:
        self.delay = RECONNECT_MIN

    def next_delay(self) -> float:
        delay = max(self.least, self.delay)
        self.delay = min(self.delay * 2, RECONNECT_MAX)
        return delay
