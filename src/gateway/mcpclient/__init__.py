"""An MCP client for backends that reach an upstream MCP server.

A transport builds on `McpClient` (`client`, the `FullBackend` on top of the MCP session in
`session`), which holds everything but moving bytes: the transport provides how a `Link`
(`link`) opens, how a message goes out on it and how its stream is held open. HTTP
transports build on `HttpClient` (`http`). `sse` parses event streams, `wire` reads and
writes JSON-RPC, and `catalogue` maps an upstream's listings to the gateway's definitions.
"""

from __future__ import annotations

from gateway.mcpclient.client import CLOSE_TIMEOUT, McpClient
from gateway.mcpclient.http import HttpClient, HttpLink
from gateway.mcpclient.link import (
    Backoff,
    Call,
    Link,
    ListenOutcome,
    MessageRefused,
    SessionExpired,
)
from gateway.mcpclient.sse import SseEvent, SseParser

__all__ = [
    "CLOSE_TIMEOUT",
    "Backoff",
    "Call",
    "HttpClient",
    "HttpLink",
    "Link",
    "ListenOutcome",
    "McpClient",
    "MessageRefused",
    "SessionExpired",
    "SseEvent",
    "SseParser",
]
