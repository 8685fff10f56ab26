"""`McpClient`: the `FullBackend` contract on top of the MCP session, for any transport.

Requests run under the caller's time budget. A timeout, a cancelled caller or any other
abandonment sends `notifications/cancelled` for the request upstream (bounded by
`CLOSE_TIMEOUT`) before the error or the cancellation goes on to the caller. Catalogues
are read page by page (`catalogue.py`), as for every backend.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar, cast

import structlog

from gateway.contracts import JSON, AskClient, BackendError, Notify
from gateway.deadlines import within
from gateway.mcpclient.bounded import TooLarge
from gateway.mcpclient.catalogue import Catalogue
from gateway.mcpclient.link import Call, Link
from gateway.mcpclient.session import McpSession
from gateway.mcpclient.wire import notification

log = structlog.get_logger(__name__)

T = TypeVar("T")
L = TypeVar("L", bound=Link)

# For courtesies (notifications/cancelled here, a transport's goodbye on close): they must
# not hold anyone up.
CLOSE_TIMEOUT = 1.0


class McpClient(Catalogue, McpSession[L]):
    """A `FullBackend` for one upstream MCP server over the transport a subclass provides."""

    # --- the Backend and FullBackend protocols ---

    async def connect(self) -> None:
        await self._within("initialize", self.discovery_timeout, self._current())

    # The `timeout` parameters are the Backend contract; asyncio.timeout applies them inside.
    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        return await self._request(
            Call("tools/call", {"name": name, "arguments": arguments}), timeout
        )

    async def request(
        self,
        method: str,
        params: JSON | None,
        timeout: float,
        on_notification: Notify | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        """Send one JSON-RPC request and return its `result`.

        The progress and log notifications the upstream sends about this request go to
        `on_notification`, in order and before the result (how a transport ties them to the
        request, and asks for progress, is in its module's docstring). The requests it
        sends its client about this one go to `on_request`, each answered from a task of
        its own, all cancelled when this request ends. A JSON-RPC error raises
        `UpstreamError`; every other failure `BackendError`.
        """
        return await self._request(Call(method, params, on_notification, on_request), timeout)

    async def notify(self, method: str, params: JSON | None) -> None:
        await self._within(method, self.discovery_timeout, self._notify_upstream(method, params))

    async def _list_page(self, method: str, params: JSON | None) -> JSON:
        return await self._request(Call(method, params), self.discovery_timeout)

    # --- requests ---

    async def _request(self, call: Call, timeout: float) -> JSON:
        try:
            async with within(timeout):
                return await self._send(call)
        except TimeoutError:
            await self._abandon(call, f"timed out after {timeout:g}s")
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({call.method})"
            ) from None
        except asyncio.CancelledError:
            await self._abandon(call, "cancelled by the client")
            raise
        except TooLarge as exc:
            # The reply's connection is closed; the upstream should stop working on it too.
            await self._abandon(call, "reply too large")
            raise BackendError(
                f"upstream {self.name!r} sent {exc} in reply to {call.method}; "
                "the connection was closed"
            ) from None
        except Exception as exc:
            failure = self._failure(exc, call.method)
            if failure is not None:
                raise failure from None
            # Garbage on the stream, or an `on_notification` that raised: the request is
            # given up, so the upstream should stop working on it.
            await self._abandon(call, "abandoned by the client")
            raise

    async def _abandon(self, call: Call, reason: str) -> None:
        link = cast("L | None", call.link)  # `_round_trip` sent it on one of ours
        if call.request_id is None or call.answered or link is None or link.lost is not None:
            return
        params = {"requestId": call.request_id, "reason": reason}
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._post(link, notification("notifications/cancelled", params), None)
        # A courtesy only: whatever stops it (a dead upstream, a closed backend) must not
        # replace the error or the cancellation the caller is about to get.
        except Exception as exc:
            log.debug("could not cancel upstream request", upstream=self.name, error=repr(exc))
