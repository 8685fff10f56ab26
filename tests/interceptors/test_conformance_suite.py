"""The interceptor conformance suite catches what it claims to: each test run on an
interceptor that breaks its rule fails, and all of them pass on one that keeps them."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import pytest

from gateway.interceptors import After, BaseInterceptor, Before, Call, UseArguments, UseResult
from gateway.testing import interceptor_conformance
from gateway.testing.interceptor_conformance import InterceptorConformance, default_samples

JSON = dict[str, Any]
SUITE = InterceptorConformance()
TESTS = sorted(name for name in dir(SUITE) if name.startswith("test_"))


class Junk(BaseInterceptor):
    async def before(self, call: Call) -> Any:
        return "yes"


class Slow(BaseInterceptor):
    async def after(self, call: Call, result: JSON) -> After:
        await asyncio.sleep(0.05)
        return None


class Mutating(BaseInterceptor):
    async def before(self, call: Call) -> Before:
        call.arguments["seen"] = True
        return None


class Growing(BaseInterceptor):
    async def after(self, call: Call, result: JSON) -> After:
        return UseResult({**result, "stamps": [*result.get("stamps", []), "x"]})


class Counting(BaseInterceptor):
    def __init__(self) -> None:
        self.count = itertools.count()

    async def before(self, call: Call) -> Before:
        return UseArguments({**call.arguments, "n": next(self.count)})


async def run(test: str, interceptor: Any) -> None:
    await getattr(SUITE, test)(interceptor, default_samples())


def takes_samples(test: str) -> bool:
    return "interceptor_samples" in inspect.signature(getattr(SUITE, test)).parameters


@pytest.mark.parametrize("test", TESTS)
async def test_an_interceptor_that_keeps_the_rules_passes(test: str) -> None:
    interceptor = BaseInterceptor()
    if takes_samples(test):
        await run(test, interceptor)
    else:
        await getattr(SUITE, test)(interceptor)


@pytest.mark.parametrize(
    ("interceptor", "test"),
    [
        (Junk(), "test_before_answers_something_the_gateway_accepts_within_the_timeout"),
        (Slow(), "test_after_answers_something_the_gateway_accepts_within_the_timeout"),
        (Mutating(), "test_steps_leave_the_arguments_and_the_result_they_get_unchanged"),
        (Growing(), "test_after_changes_nothing_more_on_a_result_it_already_changed"),
        (Counting(), "test_the_same_call_gets_the_same_answer"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value[5:40],
)
async def test_an_interceptor_that_breaks_a_rule_fails_its_test(
    interceptor: Any, test: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interceptor_conformance, "STEP_BUDGET", 0.02)
    with pytest.raises(AssertionError):
        await run(test, interceptor)


async def test_an_object_without_the_steps_fails_the_protocol_test() -> None:
    with pytest.raises(AssertionError, match="subclass BaseInterceptor"):
        await SUITE.test_it_has_the_interceptor_methods_as_coroutine_functions(object())  # type: ignore[arg-type]
