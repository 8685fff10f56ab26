"""The conformance suite of the `Interceptor` contract, shipped as a pytest plugin.

Every interceptor (built-in or from a third-party plugin) should pass it: its steps are
coroutines, answer only what the gateway accepts, within `INTERCEPTOR_TIMEOUT`, leave
their inputs alone, give the same answer to the same call, change nothing more when run
on their own output (a redaction redacted again, a truncation truncated again), survive
concurrent calls and cancellation, and run inside the gateway's own chain without failing.

Installing the gateway registers this module as a pytest plugin (entry point `pytest11:
aio_mcp_gateway_interceptors`), which only adds the fallback `interceptor_samples`
fixture; without the entry point, add `pytest_plugins =
["gateway.testing.interceptor_conformance"]` to a `conftest.py`. The tests are async and
need pytest-asyncio.

Subclass `InterceptorConformance` and provide:

- `interceptor` (required): an async fixture yielding a started instance.
- `interceptor_samples` (optional): a list of `(Call, result)` pairs to run the steps on:
  calls your interceptor sees in practice, each with a result of its kind. The default,
  `default_samples()`, has tools, a resource and a prompt, with personal data, nesting,
  Unicode, a large argument, an error result and a blob.

For example::

    import pytest

    from gateway.testing.interceptor_conformance import InterceptorConformance
    from my_plugin import MyInterceptor

    class TestMyInterceptor(InterceptorConformance):
        @pytest.fixture
        async def interceptor(self):
            interceptor = MyInterceptor()
            await interceptor.start()
            yield interceptor
            await interceptor.close()

An interceptor that only refuses some calls or answers others directly passes as it is;
the idempotence tests only look at what a step changed.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from gateway.contracts import Principal
from gateway.interceptors import (
    Answer,
    Call,
    Interceptor,
    InterceptorSpec,
    UseArguments,
    UseResult,
)
from gateway.mcp.interception import Intercepted, Interceptors, after_problem, before_problem
from gateway.settings import Settings

JSON = dict[str, Any]
Sample = tuple[Call, JSON]

STEP_BUDGET = Settings().interceptor_timeout
"""Seconds a step may take: the gateway's default `INTERCEPTOR_TIMEOUT`."""
CONCURRENCY = 50
CALLER = Principal("conformance", frozenset({"user"}), {"sub": "conformance"})


def _tool_result(text: str, structured: JSON | None = None, error: bool = False) -> JSON:
    result: JSON = {"content": [{"type": "text", "text": text}], "isError": error}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def default_samples() -> list[Sample]:
    """Calls of every kind with results of their kind, some carrying personal data."""

    def call(kind: Any, name: str, arguments: JSON, server: str | None = None) -> Call:
        return Call(CALLER, server, kind, name, arguments, "upstream")

    contact = "write to ann.lee@example.com or call +44 20 7946 0958"
    return [
        (
            call("tool", "docs__search", {"query": contact, "limit": 5}),
            _tool_result(contact, {"hits": [{"email": "ann.lee@example.com", "score": 0.9}]}),
        ),
        (call("tool", "docs__ping", {}), _tool_result("pong")),
        (
            call(
                "tool",
                "db__query",
                {"nested": {"rows": [[1, "two", None, True], {"deep": {"deeper": ["x"]}}]}},
                server="support",
            ),
            _tool_result("no rows", {"rows": []}),
        ),
        (
            call("tool", "text__echo", {"text": "naïve café, 東京, 🚀, \u200b"}),
            _tool_result("naïve café, 東京, 🚀, \u200b"),
        ),
        (call("tool", "text__echo", {"text": "lorem ipsum " * 20_000}), _tool_result("ok")),
        (call("tool", "docs__fail", {"why": "test"}), _tool_result("it failed", error=True)),
        (
            call("resource", "memo://one", {}),
            {"contents": [{"uri": "memo://one", "mimeType": "text/plain", "text": contact}]},
        ),
        (
            call("resource", "memo://blob", {}),
            {"contents": [{"uri": "memo://blob", "mimeType": "image/png", "blob": "iVBORw0KGgo="}]},
        ),
        (
            call("prompt", "docs__greeting", {"name": "Ann"}),
            {
                "description": "A greeting.",
                "messages": [{"role": "user", "content": {"type": "text", "text": contact}}],
            },
        ),
    ]


@pytest.fixture
def interceptor_samples() -> list[Sample]:
    """Fallback: the default samples."""
    return default_samples()


async def _timed(step: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    outcome = await step
    return outcome, time.perf_counter() - started


class InterceptorConformance:
    """The tests every `Interceptor` should pass; subclass it and provide `interceptor`."""

    pytestmark = pytest.mark.asyncio

    async def test_it_has_the_interceptor_methods_as_coroutine_functions(
        self, interceptor: Interceptor
    ) -> None:
        assert isinstance(interceptor, Interceptor), (
            f"{interceptor!r} lacks start, close, before or after (subclass BaseInterceptor)"
        )
        for name in ("start", "close", "before", "after"):
            assert inspect.iscoroutinefunction(getattr(interceptor, name)), name

    async def test_before_answers_something_the_gateway_accepts_within_the_timeout(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        for call, _ in interceptor_samples:
            outcome, took = await _timed(interceptor.before(call))
            assert before_problem(outcome, call) is None, (call.name, before_problem(outcome, call))
            assert took < STEP_BUDGET, f"before({call.name}) took {took:.2f}s"
            if isinstance(outcome, Answer):
                orjson.dumps(outcome.result)
            if isinstance(outcome, UseArguments):
                orjson.dumps(outcome.arguments)

    async def test_after_answers_something_the_gateway_accepts_within_the_timeout(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        for call, result in interceptor_samples:
            outcome, took = await _timed(interceptor.after(call, result))
            assert after_problem(outcome) is None, (call.name, after_problem(outcome))
            assert took < STEP_BUDGET, f"after({call.name}) took {took:.2f}s"
            if isinstance(outcome, UseResult):
                orjson.dumps(outcome.result)

    async def test_steps_leave_the_arguments_and_the_result_they_get_unchanged(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        for call, result in interceptor_samples:
            arguments, kept = copy.deepcopy(call.arguments), copy.deepcopy(result)
            await interceptor.before(call)
            await interceptor.after(call, result)
            assert call.arguments == arguments, f"before({call.name}) changed its arguments"
            assert result == kept, f"after({call.name}) changed the result it was given"

    async def test_the_same_call_gets_the_same_answer(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        for call, result in interceptor_samples:
            assert await interceptor.before(call) == await interceptor.before(call), call.name
            assert await interceptor.after(call, result) == await interceptor.after(call, result), (
                call.name
            )

    async def test_before_changes_nothing_more_on_arguments_it_already_changed(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        for call, _ in interceptor_samples:
            outcome = await interceptor.before(call)
            if not isinstance(outcome, UseArguments):
                continue
            again = await interceptor.before(replace(call, arguments=outcome.arguments))
            assert again is None or (
                isinstance(again, UseArguments) and again.arguments == outcome.arguments
            ), f"before({call.name}) is not idempotent: {again!r}"

    async def test_after_changes_nothing_more_on_a_result_it_already_changed(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        for call, result in interceptor_samples:
            outcome = await interceptor.after(call, result)
            if not isinstance(outcome, UseResult):
                continue
            again = await interceptor.after(call, outcome.result)
            assert again is None or (
                isinstance(again, UseResult) and again.result == outcome.result
            ), f"after({call.name}) is not idempotent: {again!r}"

    async def test_concurrent_calls_get_the_answers_they_get_alone(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        alone = [await interceptor.after(call, result) for call, result in interceptor_samples]
        together = await asyncio.gather(
            *(
                interceptor.after(call, result)
                for _ in range(max(1, CONCURRENCY // len(interceptor_samples)))
                for call, result in interceptor_samples
            )
        )
        assert list(together[: len(alone)]) == alone
        before_alone = [await interceptor.before(call) for call, _ in interceptor_samples]
        before_together = await asyncio.gather(
            *(interceptor.before(call) for call, _ in interceptor_samples)
        )
        assert list(before_together) == before_alone

    async def test_a_cancelled_step_leaves_the_interceptor_working(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        call, result = interceptor_samples[0]
        expected = await interceptor.after(call, result)
        task = asyncio.ensure_future(interceptor.before(call))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await interceptor.after(call, result) == expected

    async def test_it_runs_in_the_gateways_chain_without_failing(
        self, interceptor: Interceptor, interceptor_samples: list[Sample]
    ) -> None:
        spec = InterceptorSpec("under-test", lambda settings: interceptor)
        chain = Interceptors({"under-test": spec}, Settings(interceptors=("under-test",)))
        chain.instances["under-test"] = interceptor  # started by the fixture already
        steps = chain.resolve(("under-test",))
        for call, result in interceptor_samples:

            async def proceed(arguments: JSON, result: JSON = result) -> JSON:
                return result

            try:
                answered = await chain.run(steps, call, proceed)
            except Intercepted as exc:
                assert not exc.failed, exc.message
                continue
            assert isinstance(answered, dict)


__all__ = [
    "CALLER",
    "CONCURRENCY",
    "STEP_BUDGET",
    "InterceptorConformance",
    "Sample",
    "default_samples",
    "interceptor_samples",
]
