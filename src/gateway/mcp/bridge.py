"""Bridging protocol eras: a 2026-07-28 client calls a tool whose handshake-era upstream asks
its client something while the tool runs (sampling, elicitation, roots).

2026-07-28 has no server-to-client requests: a server that needs input answers
`input_required`, listing what it needs (`inputRequests`) with an opaque `requestState`, and
the client retries the same request with `inputResponses` and that state. A handshake-era
upstream instead sends requests in the middle of its call, and waits for the answers. The
bridge joins the two. The call runs as a task of the worker that took the first request,
outliving that request, bounded by `TOOL_TIMEOUT`. Whenever the upstream has asked and is
waiting, the request waiting on the call answers `input_required` listing every open ask.
The retry, on any worker of any instance, proves with the sealed state who sent it and
which round it answers, hands its answers to the waiting asks (through the hub when the
call runs elsewhere), and waits for the call's next outcome: its result, or another round.
The worker running the call publishes that outcome, and relays the call's progress and log
messages, to the worker holding the retry.

Refused with -32602, the call going on undisturbed: a state that was tampered with, has
expired, belongs to another caller or tool, or was used already (each round's state is good
for one retry: the cache records its use, and the call's worker checks the round too).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.contracts import AskClient, ClientRequestError
from gateway.ids import process_tag
from gateway.jsonrpc import RPCError
from gateway.mcp import versions
from gateway.mcp.asks import CAPABILITY, undeclared
from gateway.mcp.context import Context, Emit
from gateway.mcp.hub import Hub
from gateway.mcp.request_state import Sealer, State, refused

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
Work = Callable[[Context, AskClient | None], Coroutine[Any, Any, JSON]]
"""Runs the upstream call in the context given, answering the upstream's asks with the
`AskClient` (None: refuse them)."""

GRACE = 5.0
"""How long past the call's end a retry waits for its worker before giving up on it."""
RESUME, OUTCOME, NOTE, CANCEL = "bridge-resume", "bridge-outcome", "bridge-note", "bridge-cancel"

_ids = itertools.count(1)
"""Names this worker's calls, so it can tell a call of its own that ended from another's."""


@dataclass(eq=False)
class BridgedCall:
    id: str
    caller: str
    tool: str
    capabilities: JSON
    expires: float
    task: asyncio.Task[JSON] | None = None
    open: dict[str, JSON] = field(default_factory=dict)
    """Asks the upstream waits on, by id: `{"method", "params"}`."""
    round: str = ""
    """The round whose state may resume the call now; empty while nobody may."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    outlet: Emit | None = None
    """Where the call's progress and log messages go: the request waiting on it, if any."""


def _final(task: asyncio.Task[JSON]) -> JSON:
    """The outcome of a call that ended."""
    if task.cancelled():
        return {"error": {"code": jsonrpc.INTERNAL_ERROR, "message": "the call was cancelled"}}
    exc = task.exception()
    if isinstance(exc, RPCError):
        return {"error": exc.to_dict()}
    if exc is not None:
        log.error("bridged call failed", error=repr(exc))
        return {"error": {"code": jsonrpc.INTERNAL_ERROR, "message": "Internal error"}}
    return {"result": task.result()}


def _answers(value: Any, asked: tuple[str, ...]) -> JSON:
    """The retry's `inputResponses`, or `RPCError` (-32602) unless they answer this round."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RPCError(jsonrpc.INVALID_PARAMS, "Invalid params: 'inputResponses' must be an object")
    for key, answer in value.items():
        if key not in asked:
            raise RPCError(
                jsonrpc.INVALID_PARAMS,
                f"Invalid params: inputResponses answers {key!r}, which this round did not ask",
            )
        if not isinstance(answer, dict):
            raise RPCError(
                jsonrpc.INVALID_PARAMS, f"Invalid params: inputResponses[{key!r}] must be an object"
            )
    return value


def _call_prefix() -> str:
    return f"br-{process_tag()}-"


class Bridge:
    def __init__(self, hub: Hub, use: CacheUse, sealer: Sealer, timeout: float, limit: int) -> None:
        self.hub = hub
        self.use = use
        self.sealer = sealer
        self.timeout = timeout
        self.limit = limit
        self.calls: dict[str, BridgedCall] = {}
        """The calls this worker runs for 2026 clients, until delivered or expired."""
        self.waiting: dict[str, tuple[asyncio.Future[JSON], Emit | None]] = {}
        """Retries on this worker waiting for a call elsewhere, by round: (outcome, emit)."""
        self._background: set[asyncio.Task[Any]] = set()
        hub.handlers.update(
            {
                RESUME: self._on_resume,
                OUTCOME: self._on_outcome,
                NOTE: self._on_note,
                CANCEL: self._on_cancel,
            }
        )

    async def close(self) -> None:
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        tasks += self._background
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.calls.clear()

    @staticmethod
    def wanted(ctx: Context) -> bool:
        """A 2026 client that can answer at least one kind of ask: its calls are bridged."""
        capabilities = ctx.meta.get(versions.META_CAPABILITIES) if ctx.modern else None
        return isinstance(capabilities, dict) and any(
            c in capabilities for c in CAPABILITY.values()
        )

    # --- the first request: start the call ---------------------------------------------------

    async def call(self, ctx: Context, tool: str, work: Work) -> JSON:
        """Run `work` as a call that may outlive this request; answer its first outcome."""
        if len(self.calls) >= self.limit:
            log.warning("bridged calls at their limit; this call's asks are refused", tool=tool)
            return await work(ctx, None)
        capabilities = ctx.meta[versions.META_CAPABILITIES]
        call = BridgedCall(
            f"{_call_prefix()}{next(_ids)}",
            ctx.caller_key,
            tool,
            capabilities,
            time.time() + self.timeout,
        )
        task_ctx = replace(ctx, emit=self._outlet(call) if ctx.emit is not None else None)
        call.task = asyncio.create_task(work(task_ctx, self._asker(call)))
        call.task.add_done_callback(lambda _: self._ended(call))
        self.calls[call.id] = call
        call.outlet = ctx.emit
        try:
            outcome = await self._next(call)
        except asyncio.CancelledError:
            self._abandon(call)  # the client left before it could be asked anything
            raise
        finally:
            call.outlet = None
        return self._answer(State(call.id, call.caller, tool, (), "", call.expires), outcome)

    def _outlet(self, call: BridgedCall) -> Emit:
        async def emit(message: JSON) -> None:
            if call.outlet is not None:
                try:
                    await call.outlet(message)
                except (ConnectionError, RuntimeError):
                    pass  # that request's client left; the call goes on

        return emit

    def _asker(self, call: BridgedCall) -> AskClient:
        async def ask(method: str, params: JSON) -> JSON:
            if method == "ping":
                return {}  # 2026 clients are never pinged; the gateway answers for them
            if method not in CAPABILITY:
                raise ClientRequestError(
                    jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method} (2026-07-28 client)"
                )
            missing = undeclared(method, params, call.capabilities)
            if missing is not None:
                raise ClientRequestError(
                    jsonrpc.METHOD_NOT_FOUND, f"the client did not declare {missing}"
                )
            ask_id = f"{call.id}.{next(_ids)}"
            answer = self.hub.expect(call.caller, ask_id)
            call.open[ask_id] = {"method": method, "params": params}
            call.changed.set()
            try:
                message = await answer
            finally:
                self.hub.forget(ask_id)
                call.open.pop(ask_id, None)
            result: JSON = message["result"]
            return result

        return ask

    def _ended(self, call: BridgedCall) -> None:
        """Wake whoever waits; if nobody collects the outcome, forget it once it expires."""
        call.changed.set()
        delay = max(0.0, call.expires - time.time())
        asyncio.get_running_loop().call_later(delay, self._forget, call)

    def _forget(self, call: BridgedCall) -> None:
        if self.calls.get(call.id) is call:
            del self.calls[call.id]

    def _abandon(self, call: BridgedCall) -> None:
        """Nobody can resume the call any more: end it (the upstream is told)."""
        self._forget(call)
        if call.task is not None:
            call.task.cancel()

    async def _next(self, call: BridgedCall) -> JSON:
        """Wait for the call's next outcome: its end, or asks the client has to answer."""
        assert call.task is not None
        while True:
            if call.task.done():
                self._forget(call)
                return _final(call.task)
            if call.open:
                call.round = secrets.token_urlsafe(12)
                return {"asks": dict(call.open), "round": call.round}
            call.changed.clear()
            await call.changed.wait()

    def _answer(self, state: State, outcome: JSON) -> JSON:
        """What the client receives for `outcome`: a result, an error, or another round."""
        if "error" in outcome:
            error = outcome["error"]
            raise RPCError(error["code"], error["message"], error.get("data"))
        if "asks" in outcome:
            asks: JSON = outcome["asks"]
            sealed = self.sealer.seal(replace(state, asks=tuple(asks), round=outcome["round"]))
            return {"resultType": "input_required", "inputRequests": asks, "requestState": sealed}
        result: JSON = outcome["result"]
        return result

    # --- the retry: resume the call, wherever it runs ------------------------------------------

    async def resume(self, method: str, params: JSON, ctx: Context) -> JSON:
        """Answer a retry carrying `requestState`; `RPCError` (-32602) if it is refused."""
        state = self.sealer.open(params.get("requestState"))
        if method != "tools/call" or params.get("name") != state.tool:
            raise refused("was issued for another request")
        if state.caller != ctx.caller_key:
            raise refused("was issued to another caller")
        left = state.expires - time.time()
        if left <= 0:
            raise refused("has expired (the call ran out of TOOL_TIMEOUT)")
        answers = _answers(params.get("inputResponses"), state.asks)
        await self._use_once(state, left)
        outcome_future = asyncio.get_running_loop().create_future()
        self.waiting[state.round] = (outcome_future, ctx.emit)
        event = {
            "kind": RESUME,
            "call": state.call,
            "caller": state.caller,
            "round": state.round,
            "answers": answers,
        }
        try:
            if state.call in self.calls:
                await self._on_resume(event)
            else:
                await self.hub.publish(event)
            async with asyncio.timeout(left + GRACE):
                outcome = await outcome_future
        except TimeoutError:
            raise RPCError(
                jsonrpc.INTERNAL_ERROR, "the worker running the call did not answer; it is gone"
            ) from None
        except asyncio.CancelledError:
            await self._cancel(state.call)  # the client left: nobody can resume the call
            raise
        finally:
            self.waiting.pop(state.round, None)
        return self._answer(replace(state, asks=()), outcome)

    async def _use_once(self, state: State, left: float) -> None:
        try:
            first = await self.use.run(
                self.use.cache.add(f"request-state:{state.round}", b"1", left + GRACE)
            )
        except CacheUnavailable:
            first = state.round not in self.waiting  # the call's worker checks the round too
        if not first:
            raise refused("was already answered (a retry may use it once)")

    async def _cancel(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self._abandon(call)
        else:
            await self.hub.publish({"kind": CANCEL, "call": call_id})

    # --- hub events ----------------------------------------------------------------------------

    async def _on_resume(self, event: JSON) -> None:
        """On the call's worker: take a retry's answers and send it the next outcome."""
        call_id, round_ = str(event.get("call")), str(event.get("round"))
        call = self.calls.get(call_id)
        if call is None:
            if call_id.startswith(_call_prefix()):
                ended = refused("belongs to a call that has ended").to_dict()
                await self._deliver(round_, {"error": ended})
            return
        if not round_ or call.round != round_ or call.caller != event.get("caller"):
            await self._deliver(round_, {"error": refused("was already answered").to_dict()})
            return
        answers = event.get("answers")
        call.round = ""
        for ask_id, result in (answers or {}).items():
            if ask_id in call.open:
                del call.open[ask_id]  # answered: not listed again while the upstream reads it
                await self.hub.answer(call.caller, ask_id, {"result": result})
        self._spawn(self._continue(call, round_))

    async def _continue(self, call: BridgedCall, round_: str) -> None:
        waiting = self.waiting.get(round_)
        if waiting is not None:
            call.outlet = waiting[1]
        else:

            async def relay(message: JSON) -> None:
                await self.hub.publish({"kind": NOTE, "round": round_, "message": message})

            call.outlet = relay
        try:
            outcome = await self._next(call)
        finally:
            call.outlet = None
        await self._deliver(round_, outcome)

    async def _deliver(self, round_: str, outcome: JSON) -> None:
        waiting = self.waiting.get(round_)
        if waiting is not None:
            if not waiting[0].done():
                waiting[0].set_result(outcome)
            return
        await self.hub.publish({"kind": OUTCOME, "round": round_, "outcome": outcome})

    async def _on_outcome(self, event: JSON) -> None:
        waiting = self.waiting.get(str(event.get("round")))
        if waiting is None or waiting[0].done():
            return
        outcome = event.get("outcome")
        if not waiting[0].done() and isinstance(outcome, dict):
            waiting[0].set_result(outcome)

    async def _on_note(self, event: JSON) -> None:
        waiting = self.waiting.get(str(event.get("round")))
        if waiting is not None and waiting[1] is not None:
            try:
                await waiting[1](event["message"])
            except (ConnectionError, RuntimeError):
                pass

    async def _on_cancel(self, event: JSON) -> None:
        call = self.calls.get(str(event.get("call")))
        if call is not None:
            self._abandon(call)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
