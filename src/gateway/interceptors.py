"""The interceptor contract: steps a plugin runs before and after every `tools/call`,
`resources/read` and `prompts/get`, whichever transport carried it.

An interceptor's `before(call)` sees who calls what with which arguments and answers with
`None` (go on), `UseArguments` (go on with these), `Refuse` (the call fails with this
message) or `Answer` (this is the result; the upstream is not called). Its `after(call,
result)` answers with `None` (keep the result), `UseResult` (this one instead) or `Refuse`
(the call fails). Anything else is malformed, and fails the call like a raise or a hang.
Steps treat `call.arguments` and `result` as read-only and return new values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from gateway.contracts import Principal

if TYPE_CHECKING:
    from gateway.settings import Settings

JSON = dict[str, Any]
CallKind = Literal["tool", "resource", "prompt"]


@dataclass(frozen=True, slots=True)
class Call:
    """One call as the interceptors see it."""

    caller: Principal
    server: str | None
    """The virtual server the call came through, or None for the whole gateway."""
    kind: CallKind
    name: str
    """The gateway's name of the tool or prompt, or the resource's URI."""
    arguments: JSON
    """The arguments as they stand (a resource read has none: always empty)."""
    upstream: str


@dataclass(frozen=True, slots=True)
class UseArguments:
    """From `before`: call on with these arguments instead."""

    arguments: JSON


@dataclass(frozen=True, slots=True)
class Answer:
    """From `before`: this is the call's result; the upstream is not called."""

    result: JSON


@dataclass(frozen=True, slots=True)
class UseResult:
    """From `after`: the call's result is this one instead."""

    result: JSON


@dataclass(frozen=True, slots=True)
class Refuse:
    """From `before` or `after`: the call fails, and the caller reads `message`."""

    message: str


Before = UseArguments | Answer | Refuse | None
After = UseResult | Refuse | None


@runtime_checkable
class Interceptor(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def before(self, call: Call) -> Before: ...

    async def after(self, call: Call, result: JSON) -> After: ...


class BaseInterceptor:
    """Steps that change nothing and no resources: subclass it and override what you need."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def before(self, call: Call) -> Before:
        return None

    async def after(self, call: Call, result: JSON) -> After:
        return None


InterceptorFactory = Callable[["Settings"], Interceptor]


@dataclass(frozen=True, slots=True)
class InterceptorSpec:
    """What `gateway_register_interceptors` registers. `INTERCEPTORS` (and a virtual
    server's `interceptors`) name the ones that run; lower `priority` runs its `before`
    earlier and its `after` later, so it wraps the others."""

    name: str
    factory: InterceptorFactory
    priority: int = 100
    description: str = ""
