"""The `streamable-http-2026` backend: an upstream MCP server of protocol 2026-07-28, reached
over stateless Streamable HTTP.

No handshake and no session: every request is a POST carrying the version, the client
capabilities the gateway can relay and its client info in `params._meta`, the version and
method repeated in the `MCP-Protocol-Version` and `Mcp-Method` headers, and the tool,
prompt or resource in `Mcp-Name`. `server/discover` tells the upstream's capabilities. A
reply is a JSON body or an SSE stream; the progress and log messages in a stream go to the
request's `on_notification`. Log messages come only to requests that opt in, in 2026: one
with an `on_notification` opts in at `debug` (unless its params chose a level), and the
gateway filters them at its own client's level, as it does for handshake-era upstreams.

A request the upstream cannot finish without its client answers `input_required`. This is
where the era bridge turns that into what a handshake-era client knows: every request in
`inputRequests` goes to the request's `on_request` (which relays it to the client as an
ordinary server-to-client request on its call's stream), all at once, and the request is
sent again with the answers in `inputResponses` and the `requestState` echoed unread,
round after round, within the caller's time budget. A round with only a `requestState`
is retried after a short pause. Without an `on_request`, or when the client answers one
with an error (a retry cannot carry an error), the request fails at once with
`UpstreamError`.

Not done here: no `subscriptions/listen` stream is held, so the upstream's list changes
reach the gateway through its periodic refresh; `Mcp-Param-*` headers (arguments a tool
marks with `x-mcp-header`) are not sent. Cancelling a request closes its connection, which
is how 2026 cancels; `notify` has nothing to send.

A reply is bounded like every upstream's (`gateway.mcpclient.bounded`): its bytes after
decompression by `MAX_UPSTREAM_RESPONSE_BYTES`, each line of an event stream by
`MAX_SSE_LINE_BYTES`; past either the connection is closed and the request fails naming the
setting.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import orjson

from gateway.jsonrpc import METHOD_NOT_FOUND
from gateway.mcpclient import SseParser
from gateway.mcpclient.bounded import Bounds, Counter, TooLarge, read_bounded
from gateway.mcpclient.catalogue import Catalogue
from gateway.mcpclient.wire import (
    CLIENT_INFO,
    decode_json,
    json_messages,
    media_type,
    one_line,
    request,
    rpc_result,
)
from gateway.netguard import AddressPolicy, guarded_connector
from gateway.plugin import (
    JSON,
    AskClient,
    BackendError,
    BackendSpec,
    ClientRequestError,
    Notify,
    Registrar,
    Settings,
    UpstreamConfig,
    UpstreamError,
    hookimpl,
)
from gateway.request_ids import send_request_id
from gateway.tracing import send_trace_context

T = TypeVar("T")

TRANSPORT = "streamable-http-2026"
VERSION = "2026-07-28"
CLIENT_CAPABILITIES: JSON = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}}
NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""The param each request names its target with, mirrored in `Mcp-Name`."""
REQUEST_NOTIFICATIONS = frozenset({"notifications/progress", "notifications/message"})
STATE_ONLY_PAUSE = 0.1
"""Before retrying a round that asked nothing (the upstream shedding load)."""


def _header_value(value: str) -> str:
    """Header values that are not plain ASCII travel as `=?base64?...?=`."""
    if value.isascii() and value.isprintable():
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


class McpModernBackend(Catalogue):
    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.name = upstream.name
        self.url = upstream.url
        self.headers = dict(upstream.headers)
        self.discovery_timeout = settings.tool_timeout
        self.capabilities: JSON = {}
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self._guard = AddressPolicy.of(settings)
        self.bounds = Bounds.of(settings)

    async def start(self) -> None:
        # No network here: the first request connects.
        self._http = aiohttp.ClientSession(
            connector=guarded_connector(self._guard),
            timeout=aiohttp.ClientTimeout(total=None),
            middlewares=(send_request_id, send_trace_context),
        )

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        """Nothing listens: 2026 has no stream of the upstream's own to hold (see above)."""

    async def notify(self, method: str, params: JSON) -> None:
        """2026 clients send no notifications; a request is cancelled by closing it."""

    # --- discovery ---

    async def connect(self) -> None:
        if self.capabilities:
            return
        result = await self.request("server/discover", {}, self.discovery_timeout)
        supported = result.get("supportedVersions")
        if not isinstance(supported, list) or VERSION not in supported:
            summary = f"upstream {self.name!r} does not speak {VERSION}"
            raise BackendError(f"{summary}: {one_line(repr(supported))}", summary)
        capabilities = result.get("capabilities")
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}

    async def _collect(
        self, method: str, key: str, capability: str | None, convert: Callable[[Any], T | None]
    ) -> list[T]:
        # Discovery first, even for tools/list: it proves the upstream speaks this version.
        await self.connect()
        return await super()._collect(method, key, capability, convert)

    async def _list_page(self, method: str, params: JSON | None) -> JSON:
        return await self.request(method, params or {}, self.discovery_timeout)

    # --- requests ---

    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        return await self.request("tools/call", {"name": name, "arguments": arguments}, timeout)

    async def request(
        self,
        method: str,
        params: JSON | None,
        timeout: float,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        """Send a request, round after round while the upstream needs its client's input,
        and return its final `result`. A JSON-RPC error raises `UpstreamError`; every
        other failure `BackendError`."""
        try:
            async with asyncio.timeout(timeout):
                return await self._rounds(method, params or {}, on_notification, on_request)
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({method})"
            ) from None
        except aiohttp.ClientError as exc:
            summary = f"upstream {self.name!r} failed during {method}: {type(exc).__name__}"
            raise BackendError(f"{summary}: {one_line(str(exc))}", summary) from None
        except TooLarge as exc:
            raise BackendError(
                f"upstream {self.name!r} sent {exc} in reply to {method}; the connection was closed"
            ) from None

    async def _rounds(
        self,
        method: str,
        params: JSON,
        on_notification: Notify | None,
        on_request: AskClient | None,
    ) -> JSON:
        while True:
            result = await self._exchange(method, params, on_notification)
            if result.get("resultType") != "input_required":
                return result
            asked = result.get("inputRequests") or {}
            if not isinstance(asked, dict):
                raise BackendError(f"upstream {self.name!r} sent malformed inputRequests")
            params = {
                k: v for k, v in params.items() if k not in ("inputResponses", "requestState")
            }
            if asked:
                params["inputResponses"] = await self._ask(asked, on_request)
            else:
                await asyncio.sleep(STATE_ONLY_PAUSE)
            if result.get("requestState") is not None:
                params["requestState"] = result["requestState"]

    async def _ask(self, asked: JSON, on_request: AskClient | None) -> JSON:
        """The client's answers to a round's requests, asked all at once."""
        if on_request is None:
            raise UpstreamError(
                self.name, METHOD_NOT_FOUND, "the upstream needs input and no client can be asked"
            )
        answers: JSON = {}

        async def one(key: str, wanted: Any) -> None:
            if not isinstance(wanted, dict) or not isinstance(wanted.get("method"), str):
                raise BackendError(f"upstream {self.name!r} sent a malformed input request")
            params = wanted.get("params")
            try:
                answers[key] = await on_request(
                    wanted["method"], params if isinstance(params, dict) else {}
                )
            except ClientRequestError as exc:
                why = f"the client answered {wanted['method']} with error {exc.code}: {exc.message}"
                raise UpstreamError(self.name, exc.code, why, exc.data) from None

        try:
            async with asyncio.TaskGroup() as group:
                for key, wanted in asked.items():
                    group.create_task(one(key, wanted))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return answers

    async def _exchange(self, method: str, params: JSON, on_notification: Notify | None) -> JSON:
        """One POST: its reply's `result`, the request's notifications handed on meanwhile."""
        if self._http is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        meta = params.get("_meta")
        envelope = {
            **(meta if isinstance(meta, dict) else {}),
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": CLIENT_CAPABILITIES,
            "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
        }
        if on_notification is not None:
            envelope.setdefault("io.modelcontextprotocol/logLevel", "debug")
        request_id = next(self._ids)
        body = request(request_id, method, {**params, "_meta": envelope})
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": VERSION,
            "Mcp-Method": method,
        }
        target = params.get(NAMED_BY.get(method, ""))
        if isinstance(target, str):
            headers["Mcp-Name"] = _header_value(target)
        # Not following redirects keeps the upstream's headers (its credentials) at its origin.
        async with self._http.post(
            self.url, data=orjson.dumps(body), headers=headers, allow_redirects=False
        ) as resp:
            try:
                reply = await self._read_reply(resp, request_id, method, on_notification)
            except TooLarge:
                resp.close()  # the rest of the reply is still on the connection
                raise
        return rpc_result(self.name, reply, method)

    async def _read_reply(
        self,
        resp: aiohttp.ClientResponse,
        request_id: int,
        method: str,
        on_notification: Notify | None,
    ) -> JSON:
        if resp.content_type == "text/event-stream":
            return await self._read_stream(resp, request_id, method, on_notification)
        if resp.content_type == "application/json":
            raw = await read_bounded(
                resp.content, self.bounds.response_bytes, self.bounds.reply_too_large()
            )
            return self._reply_in(
                json_messages(decode_json(self.name, raw, method)), request_id, method
            )
        raise BackendError(
            f"upstream {self.name!r} answered {method} with HTTP {resp.status} "
            f"({media_type(resp.content_type)})"
        )

    def _reply_in(self, messages: list[JSON], request_id: int, method: str) -> JSON:
        for message in messages:
            if message.get("id") == request_id and "method" not in message:
                return message
        raise BackendError(f"upstream {self.name!r} sent no answer to {method}")

    async def _read_stream(
        self,
        resp: aiohttp.ClientResponse,
        request_id: int,
        method: str,
        on_notification: Notify | None,
    ) -> JSON:
        parser, counted = SseParser(self.bounds), Counter(self.bounds)
        async for chunk in resp.content.iter_any():
            for event in parser.feed(counted.add(chunk)):
                if event.event != "message" or not event.data.strip():
                    continue
                for message in json_messages(decode_json(self.name, event.data, method)):
                    if "method" not in message:
                        if message.get("id") == request_id:
                            return message
                        continue
                    note = message["method"]
                    if on_notification is not None and note in REQUEST_NOTIFICATIONS:
                        params = message.get("params")
                        await on_notification(note, params if isinstance(params, dict) else {})
        raise BackendError(f"upstream {self.name!r} ended its event stream without answering")


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="mcp-streamable-http-2026",
            transport=TRANSPORT,
            factory=McpModernBackend,
            description="an MCP server of protocol 2026-07-28 over stateless Streamable HTTP",
        )
    )
