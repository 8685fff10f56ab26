"""Interceptors for tests: each does one thing (change arguments, refuse, answer, change or
refuse the result) or misbehaves in one way (raise, hang, return junk), and all of them
write what they saw to a shared trace, so a test reads the order they ran in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.plugin import (
    After,
    Answer,
    BaseInterceptor,
    Before,
    Call,
    InterceptorSpec,
    Refuse,
    Registrar,
    UseArguments,
    UseResult,
    hookimpl,
)

JSON = dict[str, Any]
BeforeStep = Callable[[Call], Awaitable[Any]]
AfterStep = Callable[[Call, JSON], Awaitable[Any]]


def text_of(result: JSON) -> str:
    return str(result["content"][0]["text"])


def with_text(result: JSON, text: str) -> JSON:
    return {**result, "content": [{"type": "text", "text": text}]}


class Scripted(BaseInterceptor):
    def __init__(
        self,
        name: str,
        trace: list[str],
        before: BeforeStep | None = None,
        after: AfterStep | None = None,
    ) -> None:
        self.name = name
        self.trace = trace
        self._before = before
        self._after = after
        self.seen: list[Call] = []

    async def before(self, call: Call) -> Before:
        self.trace.append(f"{self.name}.before")
        self.seen.append(call)
        return await self._before(call) if self._before else None

    async def after(self, call: Call, result: JSON) -> After:
        self.trace.append(f"{self.name}.after")
        return await self._after(call, result) if self._after else None


async def _upper(call: Call) -> Before:
    if "text" in call.arguments:
        return UseArguments({**call.arguments, "text": str(call.arguments["text"]).upper()})
    if "name" in call.arguments:
        return UseArguments({**call.arguments, "name": str(call.arguments["name"]).upper()})
    return None


async def _refuse(call: Call) -> Before:
    if "forbidden" in str(call.arguments):
        return Refuse("forbidden words are not allowed")
    return None


async def _answer(call: Call) -> Before:
    return Answer({"content": [{"type": "text", "text": "answered by the gateway"}]})


LEAK = "reach ann.lee@example.com, card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE"


async def _leak(call: Call) -> Before:
    return Answer(
        {
            "content": [{"type": "text", "text": LEAK}],
            "structuredContent": {"people": [{"contact": {"email": "bob@example.org"}}]},
        }
    )


async def _stamp(call: Call, result: JSON) -> After:
    if call.kind == "tool":
        return UseResult(with_text(result, text_of(result) + " [stamped]"))
    return UseResult({**result, "stamped": True})


async def _refuse_result(call: Call, result: JSON) -> After:
    return Refuse("this result may not leave the gateway")


async def _raise(call: Call, *rest: Any) -> Any:
    raise RuntimeError("a bug inside an interceptor with secret details")


async def _hang(call: Call, *rest: Any) -> Any:
    await asyncio.sleep(3600)


async def _junk(call: Call, *rest: Any) -> Any:
    return "yes"


async def _arguments_for_resource(call: Call) -> Before:
    return UseArguments({"uri": "memo://two"})


class Intercepting:
    """A plugin registering a named set of test interceptors; `trace` records their steps."""

    def __init__(self) -> None:
        self.trace: list[str] = []
        t = self.trace
        self.interceptors: dict[str, tuple[int, Scripted]] = {
            "upper": (50, Scripted("upper", t, before=_upper)),
            "refuse": (40, Scripted("refuse", t, before=_refuse)),
            "answer": (70, Scripted("answer", t, before=_answer)),
            "leak": (70, Scripted("leak", t, before=_leak)),
            "stamp": (60, Scripted("stamp", t, after=_stamp)),
            "refuse_result": (60, Scripted("refuse_result", t, after=_refuse_result)),
            "first": (1, Scripted("first", t)),
            "last": (99, Scripted("last", t)),
            "raises": (30, Scripted("raises", t, before=_raise)),
            "raises_after": (30, Scripted("raises_after", t, after=_raise)),
            "hangs": (30, Scripted("hangs", t, before=_hang)),
            "hangs_after": (30, Scripted("hangs_after", t, after=_hang)),
            "junk": (30, Scripted("junk", t, before=_junk)),
            "junk_after": (30, Scripted("junk_after", t, after=_junk)),
            "resource_arguments": (30, Scripted("resource_arguments", t, _arguments_for_resource)),
        }

    def __getitem__(self, name: str) -> Scripted:
        return self.interceptors[name][1]

    @hookimpl
    def gateway_register_interceptors(self, register: Registrar[InterceptorSpec]) -> None:
        for name, (priority, instance) in self.interceptors.items():
            register.add(InterceptorSpec(name, lambda settings, i=instance: i, priority))
