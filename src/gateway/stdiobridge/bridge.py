"""The bridge proper: a client's lines from stdin become messages to the gateway, each sent
in a task of its own so that many requests run at once and an answer the gateway awaits
(to sampling, say) is never stuck behind the request waiting for it.

Every request gets an answer: the gateway's, or a JSON-RPC error naming why there is none
(unreachable, refused, the stream ended), unless the client cancelled it. What the client
sends that is not JSON-RPC is answered with -32700 or -32600. At the end of input the
requests still running get `SHUTDOWN_GRACE` seconds; on SIGTERM or SIGINT, none.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import orjson
import structlog

from gateway.mcpclient.wire import error_response
from gateway.stdiobridge.gateway_client import GatewayClient
from gateway.stdiobridge.gateway_wire import GatewayError, modern_version
from gateway.stdiobridge.lines import LineReader, Outlet, TooLong

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
TOO_BUSY = -32029
SHUTDOWN_GRACE = 5.0
"""Seconds the requests still running at the end of input have to finish."""
CLOSE_TIMEOUT = 2.0
"""Seconds to end the gateway session when the bridge stops."""


def _id_key(request_id: Any) -> Any:
    """Ids as keys: 1 and "1" are different requests, and 1 and 1.0 the same."""
    return (type(request_id) is str, request_id)


class Bridge:
    """Carries a client's messages to a gateway; what comes back goes to `outlet`."""

    def __init__(self, lines: LineReader, outlet: Outlet, max_in_flight: int) -> None:
        self._lines = lines
        self._outlet = outlet
        self._gateway: GatewayClient | None = None
        self._max_in_flight = max_in_flight
        self._requests: dict[Any, asyncio.Task[None]] = {}
        self._cancelled: set[Any] = set()
        self._stateless: set[Any] = set()
        """Requests of 2026-07-28, which have no session."""
        self._others: set[asyncio.Task[None]] = set()
        self._room = asyncio.Semaphore(max_in_flight)
        """Notifications and answers being posted: reading waits while it is full, which
        cannot deadlock, since none of them waits for the client."""
        self._stopped = asyncio.Event()

    async def deliver(self, message: JSON) -> None:
        """Write a message from the gateway to the client."""
        try:
            await self._outlet.send(message)
        except (ConnectionError, OSError):
            log.info("the client closed its end of the bridge")
            self._stopped.set()

    async def run(self, gateway: GatewayClient) -> bool:
        """Carry messages to `gateway` (whose answers come to `deliver`) until the input
        ends or a signal stops the bridge; False if reading the input failed."""
        self._gateway = gateway
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        reading = asyncio.create_task(self._read(), name="bridge-reader")
        stopping = asyncio.create_task(self._stopped.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            interrupted = self._stopped.is_set()
            reading.cancel()
            stopping.cancel()
            outcomes = await asyncio.gather(reading, stopping, return_exceptions=True)
            failure = outcomes[0]
            if isinstance(failure, Exception):
                log.error("reading the client's messages failed", error=repr(failure))
            await self._finish(0.0 if interrupted else SHUTDOWN_GRACE)
            return not isinstance(failure, Exception)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await gateway.close(CLOSE_TIMEOUT)

    async def _finish(self, grace: float) -> None:
        running = {*self._requests.values(), *self._others}
        if running and grace > 0:
            done, _ = await asyncio.wait(running, timeout=grace)
            running -= done
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _read(self) -> None:
        while (line := await self._lines.next_line()) is not None:
            if isinstance(line, TooLong):
                await self.deliver(
                    error_response(
                        None,
                        INVALID_REQUEST,
                        f"a message of {line.size} bytes is longer than the bridge takes "
                        "(--max-message-bytes)",
                    )
                )
                continue
            if not line.strip():
                continue
            try:
                decoded = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                await self.deliver(error_response(None, PARSE_ERROR, f"Parse error: {exc}"))
                continue
            # A batch (before 2025-06-18) is carried as its messages, each answered alone.
            for message in decoded if isinstance(decoded, list) and decoded else [decoded]:
                await self._dispatch(message)

    async def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            request_id = message.get("id") if isinstance(message, dict) else None
            await self._refuse(request_id, "Invalid Request: not a JSON-RPC 2.0 message")
        elif "method" in message and "id" in message:
            await self._start_request(message)
        elif "method" in message or "result" in message or "error" in message:
            if message.get("method") == "notifications/cancelled":
                if self._cancel(message.get("params")):
                    return
            await self._room.acquire()
            task = asyncio.create_task(self._pass_on(message))
            self._others.add(task)
            task.add_done_callback(self._others.discard)
        else:
            await self._refuse(
                message.get("id"), "Invalid Request: neither a request nor an answer"
            )

    async def _start_request(self, message: JSON) -> None:
        request_id = message["id"]
        key = _id_key(request_id)
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            await self._refuse(None, "Invalid Request: a request id is a string or an integer")
        elif key in self._requests:
            await self._refuse(request_id, "Invalid Request: this id names a request in progress")
        elif len(self._requests) >= self._max_in_flight:
            await self.deliver(
                error_response(
                    request_id,
                    TOO_BUSY,
                    f"{self._max_in_flight} requests are already in progress "
                    "(--max-in-flight); try again when one has ended",
                )
            )
        else:
            task = asyncio.create_task(self._request(message, key))
            self._requests[key] = task
            if modern_version(message) is not None:
                self._stateless.add(key)

    async def _refuse(self, request_id: Any, reason: str) -> None:
        await self.deliver(error_response(request_id, INVALID_REQUEST, reason))

    def _cancel(self, params: Any) -> bool:
        """Note that the client cancelled a request, which then needs no answer; whether
        that is all there is to do. A 2026-07-28 request is cancelled by closing its HTTP
        request, the one way that era has; one of a session, by passing the notification on."""
        key = _id_key(params.get("requestId")) if isinstance(params, dict) else None
        if key not in self._requests:
            return False
        self._cancelled.add(key)
        if key in self._stateless:
            self._requests[key].cancel()
            return True
        return False

    async def _request(self, message: JSON, key: Any) -> None:
        method = message.get("method")
        try:
            await self._sender().send(message)
        except GatewayError as exc:
            log.warning("a request got no answer from the gateway", method=method, error=str(exc))
            if key not in self._cancelled:
                await self.deliver(error_response(message["id"], exc.code, str(exc)))
        except Exception:
            log.exception("the bridge failed to carry a request", method=method)
            await self.deliver(error_response(message["id"], INTERNAL_ERROR, "bridge error"))
        finally:
            self._requests.pop(key, None)
            self._cancelled.discard(key)
            self._stateless.discard(key)

    def _sender(self) -> GatewayClient:
        if self._gateway is None:
            raise GatewayError("the bridge is not running")
        return self._gateway

    async def _pass_on(self, message: JSON) -> None:
        try:
            await self._sender().send(message)
        except GatewayError as exc:
            what = message.get("method", "an answer to the gateway's request")
            log.warning("the gateway did not take a message", message=what, error=str(exc))
        finally:
            self._room.release()
