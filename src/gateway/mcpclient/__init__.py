"""An MCP client for backends that reach an upstream MCP server.

A transport builds on `McpClient` (`client`, the `FullBackend` on top of the MCP session in
`session`), which holds everything but moving bytes: the transport provides how a `Link`
(`link`) opens, how a message goes out on it and how its stream is held open. HTTP
transports build on `HttpClient` (`http`), which POSTs with the keep-alive HTTP/1.1 client
in `fasthttp` (response bodies in `body`). `sse` parses event streams, `wire` reads and
writes JSON-RPC, `catalogue` maps an upstream's listings to the gateway's definitions, and
`asking` answers the requests an upstream sends its client.

Requests from an upstream to its client
---------------------------------------
In `initialize` the session declares the client capabilities the gateway can relay:
`sampling`, `elicitation` (`{}` before 2025-11-25, where it means form mode; form and url
modes from 2025-11-25) and `roots` with `listChanged`. What the upstream then asks its
client (`sampling/createMessage`, `elicitation/create`, `roots/list`, `ping`...) is
answered as follows:

- A request that relates to one of our requests goes to that request's `on_request`
  (`FullBackend.request`). It relates to the request whose own reply stream carried it
  (Streamable HTTP: the SSE response to that POST); where one stream carries everything
  (stdio, HTTP+SSE), to the request of ours that `params._meta.relatedRequestId` names (a
  key removed before `on_request` sees the params; one naming no request in progress is
  refused with -32602), or, naming none, to the one request in progress that has an
  `on_request` if exactly one has (`asking.sole_call`: the SDKs mark no relation there),
  and otherwise to none. A log message on such a stream goes the same way, to the one
  request with an `on_notification`. A request without an `on_request` has
  its related requests refused at once with -32601 ("no client can be asked"), except
  `ping`, answered `{}`.
- A request that relates to none (the listening GET stream, or HTTP+SSE without a
  relation) goes to the `ask` given to `set_listener`, within the tool timeout; without
  one, `ping` is answered `{}` and anything else refused with -32601.
- The result goes back to the upstream as a JSON-RPC response, POSTed like any message;
  a `ClientRequestError` becomes that error, any other failure -32603. Answers run as
  tasks of the session, so the stream they came on goes on being read and several can be
  pending at once; those about a request are cancelled when it ends (answered, timed out
  or cancelled), and every one when the backend closes. A cancelled answer sends nothing:
  the request it was about has ended, and with it the upstream's interest.
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
    SessionState,
)
from gateway.mcpclient.session import SessionKeeper
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
    "SessionKeeper",
    "SessionState",
    "SseEvent",
    "SseParser",
]
