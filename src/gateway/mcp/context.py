"""Who is asking, through which endpoint, in which protocol era: what every transport works
out before a message is dispatched, and what each method handler receives."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.catalogue import Catalogue, View
from gateway.contracts import Principal
from gateway.roles import Grant
from gateway.sessions import SessionRecord

JSON = dict[str, Any]
Emit = Callable[[JSON], Awaitable[None]]

SERVERS_CLAIM = "servers"
"""A JWT claim listing the virtual server ids its bearer may reach (and nothing else)."""


class Era(enum.Enum):
    """The rules a message is dispatched under."""

    PLAIN = "plain"
    """`/rpc`: JSON-RPC without sessions, plus direct invocation of a tool by name."""
    HANDSHAKE = "handshake"
    """MCP versions negotiated with `initialize` (2024-11-05 to 2025-11-25), with sessions."""
    MODERN = "modern"
    """MCP 2026-07-28: stateless, every request carries its own `_meta` envelope."""


class Refused(Exception):
    """An endpoint refuses the caller before any message is read (HTTP status + reason)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def allowed_servers(caller: Principal) -> list[str] | None:
    """The virtual servers a token is limited to, or None when it is not limited."""
    claim = caller.claims.get(SERVERS_CLAIM) if caller.claims else None
    if claim is None:
        return None
    if isinstance(claim, str):
        return claim.split()
    return [str(s) for s in claim] if isinstance(claim, list) else []


def caller_key(caller: Principal, remote: str | None) -> str:
    """Anonymous callers are told apart by address; everyone else by token subject."""
    return f"ip:{remote}" if caller.anonymous else f"sub:{caller.subject}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The caller of one HTTP request and the view of the catalogue its endpoint serves."""

    caller: Principal
    caller_key: str
    server: str | None
    """The virtual server of the endpoint, or None for the whole gateway."""
    view: View
    """The view as the request found it; lists re-read the newest one."""
    grant: Grant | None = None
    """What the caller's roles allow, or None when roles do not limit it."""

    @classmethod
    def resolve(
        cls,
        caller: Principal,
        remote: str | None,
        server: str | None,
        catalogue: Catalogue,
        grant: Grant | None = None,
    ) -> Endpoint:
        """The endpoint, or `Refused` when the token may not reach it or it does not exist."""
        allowed = allowed_servers(caller)
        where = f"virtual server '{server}'" if server else "the whole gateway"
        if allowed is not None and (server is None or server not in allowed):
            raise Refused(403, f"Forbidden: this token may not reach {where}")
        if grant is not None and not grant.reaches(server):
            raise Refused(403, grant.refusal(f"reaching {where}"))
        view = catalogue.view(server)
        if view is None:
            raise Refused(404, f"Not Found: no virtual server '{server}'")
        return cls(caller, caller_key(caller, remote), server, view, grant)


@dataclass(slots=True)
class Context:
    """One message being dispatched: its endpoint, view, era, version and session."""

    endpoint: Endpoint
    view: View
    era: Era
    version: str
    transport: str = ""
    """The client transport (`rpc`, `streamable-http`, `sse`), recorded on new sessions."""
    session: SessionRecord | None = None
    emit: Emit | None = None
    """Sends a notification to the client on this request's stream; None in JSON mode."""
    log_level: str | None = None
    meta: JSON = field(default_factory=dict)

    @property
    def caller(self) -> Principal:
        return self.endpoint.caller

    @property
    def caller_key(self) -> str:
        return self.endpoint.caller_key

    @property
    def modern(self) -> bool:
        return self.era is Era.MODERN
