"""Requests an upstream sends its client while serving a call (sampling, elicitation,
roots, ping), relayed to the client whose call it is, and that client's answers back.

The request goes out on the call's own stream (the SSE answer of a Streamable HTTP POST,
or the session's legacy SSE stream) under an id the gateway makes. The client's answer is
a POST that may land on any worker or instance: its session must be the one that was asked
(recorded in the cache under the id), and the hub carries it to the worker whose upstream
call is waiting. A client that did not declare the capability, or cannot be reached (no
session, no stream), makes the upstream get an error at once; one that never answers runs
into the call's `TOOL_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.contracts import AskClient, ClientRequestError
from gateway.ids import process_tag
from gateway.jsonrpc import RPCError
from gateway.mcp import versions
from gateway.mcp.context import Context
from gateway.mcp.hub import Hub

JSON = dict[str, Any]
CAPABILITY = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
"""The client capability each relayed method needs; others (ping) need none."""


URL_ELICITATION_REQUIRED = -32042
"""The error by which a server asks for URL elicitations instead of sending them."""


def takes_url_elicitation(ctx: Context) -> bool:
    """Whether the context's client declared URL elicitation: in its session, or in a
    2026-07-28 request's `_meta`."""
    if ctx.session is not None:
        capabilities: object = ctx.session.client_capabilities
    else:
        capabilities = ctx.meta.get(versions.META_CAPABILITIES) if ctx.modern else None
    if not isinstance(capabilities, dict):
        return False
    return undeclared("elicitation/create", {"mode": "url"}, capabilities) is None


def undeclared(method: str, params: JSON, capabilities: JSON) -> str | None:
    """What the client did not declare that the upstream's `method` with `params` needs,
    or None: the capability, or for a URL elicitation its `url` mode (an `elicitation`
    capability naming no mode means form mode only)."""
    needed = CAPABILITY.get(method)
    if needed is None:
        return None
    if needed not in capabilities:
        return f"the '{needed}' capability"
    declared = capabilities[needed]
    if method == "elicitation/create" and params.get("mode") == "url":
        if not isinstance(declared, dict) or "url" not in declared:
            return "URL elicitation ('elicitation.url')"
    return None


_ids = itertools.count(1)


def _key(ask_id: str) -> str:
    return f"ask:{ask_id}"


class ClientAsks:
    def __init__(self, hub: Hub, use: CacheUse, timeout: float) -> None:
        self.hub = hub
        self.use = use
        self.timeout = timeout

    def asker(self, ctx: Context) -> AskClient | None:
        """What answers the upstream's requests about this context's call; None when the
        client cannot be asked at all (the backend then refuses them at once)."""
        if ctx.emit is None or ctx.session is None or ctx.modern:
            return None

        async def ask(method: str, params: JSON) -> JSON:
            return await self._ask(ctx, method, params)

        return ask

    async def _ask(self, ctx: Context, method: str, params: JSON) -> JSON:
        session, emit = ctx.session, ctx.emit
        assert session is not None and emit is not None
        missing = undeclared(method, params, session.client_capabilities)
        if missing is not None:
            raise ClientRequestError(
                jsonrpc.METHOD_NOT_FOUND, f"the client did not declare {missing}"
            )
        ask_id = f"gw-{process_tag()}-{next(_ids)}"
        answer = self.hub.expect(session.id, ask_id)
        try:
            try:
                key = _key(ask_id)
                await self.use.run(self.use.cache.set(key, session.id.encode(), self.timeout))
            except CacheUnavailable:
                pass  # an answer landing on this worker still finds its way
            await emit({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params})
            async with asyncio.timeout(self.timeout):
                message = await answer
        finally:
            self.hub.forget(ask_id)
            # An answer arriving later, on any worker, is refused as no longer awaited.
            with contextlib.suppress(CacheUnavailable):
                await self.use.run(self.use.cache.delete(_key(ask_id)))
        error = message.get("error")
        if error is not None:
            raise ClientRequestError(error["code"], error["message"], error.get("data"))
        result: JSON = message["result"]
        return result

    async def answer(self, session_id: str, response: jsonrpc.Response) -> None:
        """Take a client's answer, or raise `RPCError` saying why it is refused."""
        ask_id = response.id
        if not isinstance(ask_id, str) or not ask_id.startswith("gw-"):
            raise RPCError(
                jsonrpc.INVALID_REQUEST,
                f"Invalid Request: no request with id {ask_id!r} was sent to this client",
            )
        message = _checked(response)
        if ask_id not in self.hub.asks:
            try:
                owner = await self.use.run(self.use.cache.get(_key(ask_id)))
            except CacheUnavailable:
                owner = None
            if owner is None:
                raise RPCError(
                    jsonrpc.INVALID_REQUEST,
                    f"Invalid Request: request {ask_id} is not waiting for an answer "
                    "(answered, timed out or ended)",
                )
            if owner.decode() != session_id:
                raise RPCError(
                    jsonrpc.INVALID_REQUEST,
                    f"Invalid Request: request {ask_id} was not sent to this session",
                )
        elif self.hub.asks[ask_id][0] != session_id:
            raise RPCError(
                jsonrpc.INVALID_REQUEST,
                f"Invalid Request: request {ask_id} was not sent to this session",
            )
        await self.hub.answer(session_id, ask_id, message)


def _checked(response: jsonrpc.Response) -> JSON:
    """The answer as a JSON-RPC message, or `RPCError` if it is malformed."""
    if response.is_error:
        error = response.error
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or isinstance(error.get("code"), bool)
            or not isinstance(error.get("message"), str)
        ):
            raise RPCError(
                jsonrpc.INVALID_REQUEST,
                "Invalid Request: an error answer needs an integer 'code' and a string 'message'",
            )
        return {"error": {k: error[k] for k in ("code", "message", "data") if k in error}}
    if not isinstance(response.result, dict):
        raise RPCError(jsonrpc.INVALID_REQUEST, "Invalid Request: 'result' must be an object")
    return {"result": response.result}
