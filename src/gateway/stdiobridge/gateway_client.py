"""The bridge's side of the gateway: MCP Streamable HTTP, as a client, passing every message
through unchanged.

Each client message is POSTed on its own; whatever the gateway answers (a JSON body, or an
event stream of notifications, server-to-client requests and finally the response) goes to
the outlet. The session id from `initialize` and the negotiated protocol version go on
every later request. Once the client has sent `notifications/initialized`, a GET stream
carries what the gateway sends outside any request (list changes, resource updates, its
own requests), reopened with backoff and resumed from its last event id. When the gateway
has forgotten the session (404), the client's own `initialize` is sent again, once however
many requests saw it forget, together with its log level and resource subscriptions; the
client sees nothing of it. A 2026-07-28 message (its version in `params._meta`) has no
session: it goes with the routing headers that era asks for. The headers, the errors and
the reading of answers are `gateway.stdiobridge.gateway_wire`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import structlog

from gateway.mcpclient.link import Backoff
from gateway.mcpclient.session import STREAM_HEALTHY_SECONDS
from gateway.mcpclient.sse import SseParser
from gateway.mcpclient.wire import json_messages, notification, one_line
from gateway.stdiobridge.gateway_wire import (
    ACCEPT,
    GATEWAY_ERROR,
    JSON,
    ROUTED_BY,
    SESSION_HEADER,
    VERSION_HEADER,
    GatewayError,
    SessionGone,
    StreamBroken,
    header_value,
    modern_version,
    read_bounded,
    refusal_detail,
    refusal_rpc_error,
)

log = structlog.get_logger(__name__)

Deliver = Callable[[JSON], Awaitable[None]]

MAX_SUBSCRIPTIONS = 1024
"""Resource subscriptions remembered for a renewed session."""
RESUME_ATTEMPTS = 3
"""Times a request's event stream that broke before its response is resumed."""


class GatewayClient:
    """One MCP session with the gateway at `url`, carrying a client's messages."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        token: str | None,
        deliver: Deliver,
        max_message_bytes: int,
    ) -> None:
        self._http = http
        self.url = url
        self._base = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if token:
            self._base["Authorization"] = f"Bearer {token}"
        self._deliver = deliver
        self._limit = max_message_bytes
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._initialize: JSON | None = None
        self._log_level: JSON | None = None
        self._subscriptions: set[str] = set()
        self._renewing = asyncio.Lock()
        self._handshaken = asyncio.Event()
        """Clear while the client's `initialize` is on its way: what the client sends
        meanwhile waits for the session id it must carry."""
        self._handshaken.set()
        self._renewals = itertools.count(1)
        self._listener: asyncio.Task[None] | None = None

    # --- what the bridge calls ------------------------------------------------------------

    async def send(self, message: JSON) -> None:
        """POST one client message; what comes back goes to the client. A message sent in a
        session the gateway has forgotten is sent again in a renewed one, once."""
        self._remember(message)
        if message.get("method") == "initialize":
            self._handshaken.clear()
            try:
                await self._initialize_session(message, self._deliver)
            finally:
                self._handshaken.set()
            return
        await self._handshaken.wait()
        sent_in = self.session_id
        try:
            await self._post(message, self._deliver)
        except SessionGone as gone:
            if "method" not in message:
                # An answer to a request of the forgotten session: nobody waits for it.
                log.info("dropped an answer to a request of an expired session")
                return
            await self.renew(gone.session_id)
            await self._post(message, self._deliver)
        if message.get("method") == "notifications/initialized" and sent_in is not None:
            self.listen()

    def listen(self) -> None:
        """Hold the session's server-to-client stream open, from now until `close`."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="bridge-listener")

    async def close(self, timeout: float) -> None:
        """Stop listening and end the session at the gateway (DELETE), within `timeout`."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if self.session_id is None:
            return
        try:
            async with asyncio.timeout(timeout):
                async with self._http.delete(self.url, headers=self._headers()):
                    pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not end the gateway session", error=one_line(str(exc)))

    async def renew(self, stale: str) -> None:
        """Open a new session in place of `stale` with the client's own `initialize`,
        unless another request already has."""
        async with self._renewing:
            if self.session_id != stale:
                return
            if self._initialize is None:
                raise GatewayError("the gateway session expired before the client initialized")
            message = {
                "jsonrpc": "2.0",
                "id": f"bridge-renewal-{next(self._renewals)}",
                "method": "initialize",
                "params": self._initialize,
            }
            answers: list[JSON] = []

            async def keep(answer: JSON) -> None:
                answers.append(answer)

            await self._initialize_session(message, keep)
            if self.session_id is None or not any("result" in a for a in answers):
                raise GatewayError("the gateway session expired and renewing it failed")
            await self._post(notification("notifications/initialized", None), self._ignore)
            await self._restore()
            self._listen_again()
            log.info("renewed the gateway session after it expired")

    def _listen_again(self) -> None:
        """Move the server-to-client stream to the renewed session: the old one's stream
        may stay open, but nothing is sent on it any more."""
        listener = self._listener
        if listener is None or listener.done() or listener is asyncio.current_task():
            return  # not listening, or the listener renewed and goes on by itself
        listener.cancel()
        self._listener = None
        self.listen()

    # --- sending -------------------------------------------------------------------------

    def _remember(self, message: JSON) -> None:
        """What a renewed session must be told again: the level and subscriptions."""
        method, params = message.get("method"), message.get("params")
        if not isinstance(params, dict) or "id" not in message:
            return
        if method == "logging/setLevel":
            self._log_level = params
        elif method == "resources/subscribe" and isinstance(params.get("uri"), str):
            if len(self._subscriptions) < MAX_SUBSCRIPTIONS:
                self._subscriptions.add(params["uri"])
        elif method == "resources/unsubscribe":
            self._subscriptions.discard(str(params.get("uri")))

    async def _restore(self) -> None:
        again: list[tuple[str, JSON]] = []
        if self._log_level is not None:
            again.append(("logging/setLevel", self._log_level))
        again.extend(("resources/subscribe", {"uri": uri}) for uri in sorted(self._subscriptions))
        for n, (method, params) in enumerate(again):
            request = {"jsonrpc": "2.0", "id": f"bridge-restore-{n}", "method": method}
            try:
                await self._post({**request, "params": params}, self._ignore)
            except GatewayError as exc:
                log.warning("could not restore after renewing", method=method, error=str(exc))

    async def _ignore(self, message: JSON) -> None:
        return None

    async def _initialize_session(self, message: JSON, deliver: Deliver) -> None:
        params = message.get("params")
        self._initialize = dict(params) if isinstance(params, dict) else {}
        self.session_id = None
        self.protocol_version = None
        request_id = message.get("id")

        async def watch(answer: JSON) -> None:
            result = answer.get("result")
            if answer.get("id") == request_id and isinstance(result, dict):
                version = result.get("protocolVersion")
                self.protocol_version = version if isinstance(version, str) else None
            await deliver(answer)

        await self._post(message, watch)

    def _headers(self, message: JSON | None = None) -> dict[str, str]:
        headers = dict(self._base)
        modern = modern_version(message) if message is not None else None
        if modern is not None and message is not None:
            method = str(message.get("method"))
            headers[VERSION_HEADER] = modern
            headers["Mcp-Method"] = method
            params = message.get("params")
            target = params.get(ROUTED_BY.get(method, "")) if isinstance(params, dict) else None
            if isinstance(target, str):
                headers["Mcp-Name"] = header_value(target)
            return headers
        if self.session_id is not None:
            headers[SESSION_HEADER] = self.session_id
        if self.protocol_version is not None:
            headers[VERSION_HEADER] = self.protocol_version
        return headers

    async def _post(self, message: JSON, deliver: Deliver) -> None:
        """POST `message`; every message of the answer goes to `deliver`. A request whose
        event stream ends or breaks before its response is resumed from the last event."""
        headers = self._headers(message)
        sent_in = headers.get(SESSION_HEADER)
        what = str(message.get("method", "a response"))
        parser: SseParser | None = None
        answered = False
        try:
            async with self._exchange("POST", what, headers, orjson.dumps(message)) as resp:
                if resp.status == 404 and sent_in is not None:
                    raise SessionGone(sent_in)
                if resp.status >= 300:
                    await self._refused(resp, message, deliver, what)
                    return
                if message.get("method") == "initialize":
                    self.session_id = resp.headers.get(SESSION_HEADER)
                if resp.content_type == "text/event-stream":
                    parser = SseParser()
                    answered = await self._stream(resp, parser, message.get("id"), deliver)
                elif resp.status != 202 and resp.content_length != 0:
                    raw = await read_bounded(resp, self._limit)
                    for answer in json_messages(self._decode(raw)):
                        await deliver(answer)
        except StreamBroken as exc:
            if parser is None or not parser.last_event_id:
                raise
            log.info("a request's event stream broke; resuming it", method=what, error=str(exc))
        is_request = "id" in message and "method" in message
        if is_request and parser is not None and not answered:
            await self._resume(message, parser, deliver)

    async def _resume(self, message: JSON, parser: SseParser, deliver: Deliver) -> None:
        what = str(message.get("method"))
        backoff = Backoff()
        for _ in range(RESUME_ATTEMPTS if parser.last_event_id else 0):
            await asyncio.sleep(backoff.next_delay())
            headers = {**self._headers(), "Accept": "text/event-stream"}
            headers["Last-Event-ID"] = parser.last_event_id
            try:
                async with self._exchange("GET", what, headers) as resp:
                    if resp.status >= 300 or resp.content_type != "text/event-stream":
                        break
                    if await self._stream(resp, parser, message.get("id"), deliver):
                        return
            except GatewayError as exc:
                log.info("resuming a request's stream failed", method=what, error=str(exc))
        raise GatewayError(f"the gateway ended the stream of {what} before answering it")

    @asynccontextmanager
    async def _exchange(
        self, verb: str, what: str, headers: dict[str, str], body: bytes | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self._http.request(
                verb, self.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                yield resp
        except aiohttp.ClientConnectorError as exc:
            reason = os.strerror(exc.errno) if exc.errno else one_line(str(exc))
            raise GatewayError(
                f"the gateway could not be reached at {self.url}: {reason}"
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise StreamBroken(f"the gateway closed the connection during {what}") from None
        except aiohttp.ClientPayloadError:
            raise StreamBroken(f"the gateway sent a truncated reply to {what}") from None
        except aiohttp.ClientError as exc:
            raise GatewayError(
                f"the gateway failed during {what}: {type(exc).__name__}: {one_line(str(exc))}"
            ) from None

    async def _refused(
        self, resp: aiohttp.ClientResponse, message: JSON, deliver: Deliver, what: str
    ) -> None:
        """An HTTP error status: the gateway's own JSON-RPC error where it sent one for this
        request, else a `GatewayError` naming the status and its reason."""
        body = await read_bounded(resp, self._limit)
        error = refusal_rpc_error(body)
        if error is not None and "id" in message and error.get("id") == message["id"]:
            await deliver(error)
            return
        detail = refusal_detail(body)
        reason = f"HTTP {resp.status} {resp.reason or ''}".rstrip()
        code = error["error"]["code"] if error is not None else GATEWAY_ERROR
        text = f"the gateway answered {reason} to {what}" + (f": {detail}" if detail else "")
        raise GatewayError(text, code)

    def _decode(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError("the gateway sent a reply that is not JSON") from None

    async def _stream(
        self, resp: aiohttp.ClientResponse, parser: SseParser, request_id: Any, deliver: Deliver
    ) -> bool:
        """Deliver an event stream's messages; whether the response to `request_id` came."""
        answered = False
        unread = 0
        async for chunk in resp.content.iter_any():
            events = parser.feed(chunk)
            unread = len(chunk) if events else unread + len(chunk)
            if unread > self._limit:
                raise GatewayError(f"the gateway sent an event larger than {self._limit} bytes")
            for event in events:
                if event.event != "message" or not event.data.strip():
                    continue
                try:
                    decoded = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    log.warning("the gateway sent an event that is not JSON")
                    continue
                for answer in json_messages(decoded):
                    if "method" not in answer and answer.get("id") == request_id:
                        answered = True
                    await deliver(answer)
        return answered

    # --- the server-to-client stream -----------------------------------------------------

    async def _listen(self) -> None:
        backoff = Backoff()
        parser, listening_in = SseParser(), self.session_id
        while True:
            session = self.session_id
            if session is None:
                return
            if session != listening_in:  # renewed: the old stream's event ids mean nothing
                parser, listening_in = SseParser(), session
            headers = {**self._headers(), "Accept": "text/event-stream"}
            if parser.last_event_id:
                headers["Last-Event-ID"] = parser.last_event_id
            try:
                async with self._exchange("GET", "GET (event stream)", headers) as resp:
                    if resp.status == 405:
                        log.info("the gateway offers no server-to-client stream")
                        return
                    if resp.status == 404:
                        await self.renew(session)
                        continue
                    if resp.status >= 300 or resp.content_type != "text/event-stream":
                        log.warning("the gateway refused the event stream", status=resp.status)
                    else:
                        opened = time.monotonic()
                        await self._stream(resp, parser, None, self._deliver)
                        if time.monotonic() - opened > STREAM_HEALTHY_SECONDS:
                            backoff.reset()
            except GatewayError as exc:
                log.info("the event stream broke", error=str(exc))
            backoff.least = (parser.retry or 0) / 1000
            await asyncio.sleep(backoff.next_delay())
