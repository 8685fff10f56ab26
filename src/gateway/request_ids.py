"""Request ids: the one a client sends in `X-Request-ID` when it is short printable ASCII,
else one made here; kept in a context variable for the request's whole life (its tasks
included) and sent to HTTP upstreams with every request made on its behalf.

Upstream sessions and connections are shared by every client request, so the id is read
when each upstream request is sent, never stored with a session."""

from __future__ import annotations

import itertools
from contextvars import ContextVar

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from gateway.ids import process_tag

HEADER = "X-Request-ID"
MAX_LENGTH = 128
# A random per-process prefix plus a counter: unique across workers and restarts, and much
# cheaper than a uuid4 per request.
_counter = itertools.count(1)

current: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the client request being served, or None outside one."""


def request_id(given: str) -> str:
    """`given` when it may be passed on as a header (at most `MAX_LENGTH` printable ASCII
    characters), else a new id."""
    if 0 < len(given) <= MAX_LENGTH and given.isascii() and given.isprintable():
        return given
    return f"{process_tag()}{next(_counter):012x}"


def header_line() -> bytes:
    """The header line for a raw HTTP/1.1 request head: empty outside a client request."""
    rid = current.get()
    return b"" if rid is None else b"X-Request-ID: %b\r\n" % rid.encode("ascii")


async def send_request_id(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """aiohttp client middleware: the current request id on every upstream request."""
    rid = current.get()
    if rid is not None:
        request.headers[HEADER] = rid
    return await handler(request)
