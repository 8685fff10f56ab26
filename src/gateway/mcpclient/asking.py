"""The answers to the requests an upstream sends its client: from the `AskClient` that
stands for the client in question, or, when there is none, the answer that needs nobody.
`Answering`, a part of the session (`session.py`), picks that client for each request and
posts the JSON-RPC response back to the upstream; the functions turn what the client says,
or fails to say, into that response."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any, ClassVar, Generic, TypeVar

import structlog

from gateway.contracts import JSON, AskClient, BackendError, ClientRequestError
from gateway.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND
from gateway.log_throttle import LogThrottle
from gateway.mcpclient.link import Call, Link
from gateway.mcpclient.wire import error_response, params_of, related_request, response

log = structlog.get_logger(__name__)
_DROPS = LogThrottle()
"""One warning per upstream per interval for the requests dropped past `MAX_ANSWERING`."""

L = TypeVar("L", bound=Link)

MAX_ANSWERING = 256
"""Answers to one upstream's requests under way at once. Past it a request is dropped
unanswered: an upstream that asks faster than it reads the answers would otherwise grow
them, and the bytes waiting to reach it, without bound."""


def unanswered(message: JSON, why: str) -> JSON:
    """The response when no client can be asked: `ping` needs none, the rest is refused."""
    method, request_id = message.get("method"), message.get("id")
    if method == "ping":
        return response(request_id, {})
    refusal = f"no client can be asked for {method} {why}"
    return error_response(request_id, METHOD_NOT_FOUND, refusal)


async def answer(
    upstream: str, ask: AskClient, message: JSON, params: JSON, timeout: float | None
) -> JSON:
    """The response to `message` that `ask` gives, within `timeout` if there is one.

    A `ClientRequestError` becomes that error; anything else that goes wrong becomes
    -32603, so the upstream is never left waiting (cancellation alone leaves it unanswered,
    for then the request it belongs to has ended).
    """
    method, request_id = str(message.get("method")), message.get("id")
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            result = await ask(method, params)
    except ClientRequestError as exc:
        return error_response(request_id, exc.code, exc.message, exc.data)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            why = f"{method}: no answer from the client within {timeout:g}s"
            return error_response(request_id, INTERNAL_ERROR, why)
        log.exception("answering an upstream request failed", upstream=upstream, method=method)
        return error_response(request_id, INTERNAL_ERROR, f"{method}: the client failed")
    if not isinstance(result, dict):
        log.warning("a client answered with no result object", upstream=upstream, method=method)
        return error_response(request_id, INTERNAL_ERROR, f"{method}: the client sent no result")
    return response(request_id, result)


def sole_call(link: Link, asking: bool) -> Call | None:
    """On a stream every request shares, the one request of ours in progress that can hear
    from its client's upstream (`asking`: be asked, else be told), if exactly one can.

    Few servers say which request a message there is about (stdio has no place for it, and
    the SDKs put none in the message): with one request in progress it can only be about
    that one, or about none, which a server asks or tells outside any request only rarely.
    With several it could be about any, so it is taken to be about none."""
    found = None
    for call in link.pending.values():
        if (call.on_request if asking else call.on_notification) is None:
            continue
        if found is not None:
            return None
        found = call
    return found


class Answering(ABC, Generic[L]):
    """The session's part that answers what its upstream asks the client: it finds who
    answers each request and posts the response back on the request's link."""

    name: str
    discovery_timeout: float
    shared_stream: ClassVar[bool]
    _ask: AskClient | None
    _answering: set[asyncio.Task[None]]
    """Set by the session: the answers under way (`MAX_ANSWERING`)."""

    @abstractmethod
    async def _post(self, link: L, message: JSON, call: Call | None) -> None:
        """Send one message on `link` (the transport's, see `McpSession`)."""

    @abstractmethod
    def _failure(self, exc: Exception, what: str) -> BackendError | None:
        """The `BackendError` for a failure of the transport's library, if it is one."""

    @abstractmethod
    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` as a task of the session, cancelled when it closes."""

    async def _on_server_request(self, link: L, message: JSON, call: Call | None) -> None:
        """A request from the upstream to its client. It relates to `call` when that call's
        own reply stream carried it; on a shared stream, to the call it names, or without a
        name to the `sole_call` that can ask."""
        params = params_of(message)
        if call is None and self.shared_stream:
            related, params = related_request(params)
            if related is None:
                call = sole_call(link, asking=True)
            else:
                call = link.pending.get(related) if type(related) is int else None
                if call is None:
                    why = f"relatedRequestId {related!r} names no request in progress"
                    await self._reply(link, error_response(message.get("id"), INVALID_PARAMS, why))
                    return
        if call is None:
            if self._ask is None:
                await self._reply(link, unanswered(message, "outside a request"))
            else:
                # No request bounds this one: the tool timeout does.
                work = self._answer(link, message, self._ask, params, self.discovery_timeout)
                self._answer_in_task(message, work)
        elif call.on_request is None:
            await self._reply(link, unanswered(message, f"during this {call.method}"))
        else:
            # The answer may take a person's time; the stream goes on being read meanwhile.
            work = self._answer(link, message, call.on_request, params, None)
            task = self._answer_in_task(message, work)
            if task is not None:
                call.asking.add(task)
                task.add_done_callback(call.asking.discard)

    def _answer_in_task(
        self, message: JSON, work: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None] | None:
        """Run `work`, the answer to `message`, in a task of its own, unless
        `MAX_ANSWERING` answers are under way already."""
        if len(self._answering) >= MAX_ANSWERING:
            work.close()
            dropped = _DROPS.count(self.name)
            if dropped:
                log.warning(
                    "upstream requests dropped: too many answers under way",
                    upstream=self.name,
                    method=message.get("method"),
                    bound=MAX_ANSWERING,
                    dropped=dropped,
                )
            return None
        task = self._spawn(work)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        return task

    async def _answer(
        self, link: L, message: JSON, ask: AskClient, params: JSON, timeout: float | None
    ) -> None:
        await self._send_reply(link, await answer(self.name, ask, message, params, timeout))

    async def _reply(self, link: L, reply: JSON) -> None:
        if self.shared_stream:
            # The stream's reader must not wait for a POST to come back.
            self._answer_in_task(reply, self._send_reply(link, reply))
        else:
            # A server that asks us something may wait for the answer before it goes on.
            await self._send_reply(link, reply)

    async def _send_reply(self, link: L, reply: JSON) -> None:
        try:
            await self._post(link, reply, None)
        except Exception as exc:
            if not isinstance(exc, BackendError) and self._failure(exc, "a reply") is None:
                raise
            log.info("could not answer upstream request", upstream=self.name, error=repr(exc))
