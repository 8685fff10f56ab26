"""`HostedStdio`: the `FullBackend` of a stdio upstream whose process runs in the stdio host,
reached through the worker's `Hub`.

Each request is sent to the host with its time budget; the host's own timeout answers
first, and a caller that gives up (cancelled or out of time) sends `cancel`, which the host
turns into `notifications/cancelled` upstream. When the host goes away, the requests
waiting on it fail with `BackendError` (a tool call thus ends in an `isError` result) and
the next one starts a new host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.mcpclient.catalogue import Catalogue
from gateway.plugin import (
    JSON,
    AskClient,
    BackendError,
    Notify,
    Settings,
    UpstreamConfig,
    UpstreamError,
)
from gateway.tracing import with_trace_meta
from gateway_plugins.stdio.hub import HUBS, HostCommand, Hub, Pending

T = TypeVar("T")

# The host's own timeout answers first; this is for a host that does not answer at all.
HOST_GRACE = 2.0


class HostedStdio(Catalogue):
    def __init__(
        self,
        upstream: UpstreamConfig,
        settings: Settings,
        directory: Callable[[], Path],
        command: Callable[[], HostCommand],
        refusal: str | None = None,
    ) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.discovery_timeout = settings.tool_timeout
        self.capabilities: JSON = {}
        self._directory = directory
        self._command = command
        self._refusal = refusal
        self._hub: Hub | None = None
        self._ref = 0
        self._listener: Notify | None = None
        self._ask: AskClient | None = None

    # --- what the hub asks of a user ---

    def open_message(self) -> dict[str, Any]:
        return {
            "config": {
                "name": self.name,
                "options": dict(self.upstream.options),
                "env": dict(self.upstream.headers),
            }
        }

    @property
    def listener(self) -> Notify | None:
        return self._listener

    @property
    def ask(self) -> AskClient | None:
        return self._ask

    # --- lifecycle ---

    async def start(self) -> None:
        if self._hub is None:
            try:
                directory = self._directory()
            except OSError as exc:
                # Every use fails with the reason; starting must not fail the catalogue.
                self._refusal = f"upstream {self.name!r}: the stdio runtime directory: {exc}"
                return
            self._hub = HUBS.acquire(directory, self._command)
            self._ref = self._hub.add(self)

    async def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.remove(self._ref)
            await HUBS.release(hub)

    def set_listener(self, listener: Notify | None, ask: AskClient | None = None) -> None:
        self._listener, self._ask = listener, ask
        if self._hub is not None:
            self._hub.listen(self._ref)

    # --- requests ---

    async def connect(self) -> None:
        result = await self._exchange({"op": "connect"}, self.discovery_timeout, "initialize")
        capabilities = result.get("capabilities")
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}

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
        message = {
            "op": "request",
            "method": method,
            # The host builds the JSON-RPC request, outside this call's client span.
            "params": with_trace_meta(params),
            "timeout": timeout,
            "notify": on_notification is not None,
            "ask": on_request is not None,
        }
        return await self._exchange(message, timeout, method, on_notification, on_request)

    async def notify(self, method: str, params: JSON | None) -> None:
        message = {"op": "notify", "method": method, "params": params}
        await self._exchange(message, self.discovery_timeout, method)

    async def status(self) -> JSON:
        return await self._exchange({"op": "status"}, self.discovery_timeout, "status")

    async def _exchange(
        self,
        message: dict[str, Any],
        timeout: float,
        what: str,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        if self._refusal is not None:
            raise BackendError(self._refusal)
        hub = self._hub
        if hub is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        call_id = hub.next_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        hub.pending[call_id] = Pending(future, on_notification, on_request)
        sent = False
        try:
            async with asyncio.timeout(timeout + HOST_GRACE):
                await hub.send({**message, "ref": self._ref, "id": call_id})
                sent = True
                answer = await future
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({what})"
            ) from None
        finally:
            pending = hub.pending.pop(call_id, None)
            if pending is not None:
                for task in pending.asking:
                    task.cancel()
            if sent and not future.done():
                hub.send_now({"op": "cancel", "id": call_id})
        return self._result(answer, what)

    def _result(self, answer: dict[str, Any], what: str) -> JSON:
        op = answer.get("op")
        if op == "error":
            code = answer.get("code")
            raise UpstreamError(
                self.name,
                code if isinstance(code, int) else -32603,
                str(answer.get("message", "")),
                answer.get("data"),
            )
        if op == "failure":
            raise BackendError(str(answer.get("message", f"upstream {self.name!r} failed")))
        result = answer.get("result")
        if not isinstance(result, dict):
            raise BackendError(f"upstream {self.name!r} sent a non-object result for {what}")
        return result

    async def _list_page(self, method: str, params: JSON | None) -> JSON:
        return await self.request(method, params, self.discovery_timeout)
