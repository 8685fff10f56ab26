"""Running interceptors around calls: building every installed one at start, resolving
which run for the whole gateway (`INTERCEPTORS`) and for each virtual server (its
`interceptors`), and running a chain around one call.

A chain is a tuple resolved once per list of names, so a call with no interceptor costs a
falsy-tuple check. Each step is bounded by `INTERCEPTOR_TIMEOUT`. A step that raises,
overruns or returns something malformed fails the call closed with an error naming the
interceptor, unless `INTERCEPTORS_FAIL_OPEN` is on: then the step is skipped. Either way
the reason is logged. A refusal is not a failure: it always ends the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import structlog

from gateway.deadlines import within
from gateway.interceptors import (
    After,
    Answer,
    BaseInterceptor,
    Before,
    Call,
    Interceptor,
    InterceptorSpec,
    Refuse,
    UseArguments,
    UseResult,
)
from gateway.metrics import INTERCEPTOR_OUTCOMES
from gateway.settings import Settings
from gateway.store import ServerRecord

log = structlog.get_logger(__name__)

Outcome = TypeVar("Outcome")

JSON = dict[str, Any]
Proceed = Callable[[JSON], Awaitable[JSON]]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    interceptor: Interceptor


class Intercepted(Exception):
    """An interceptor refused the call, or failed with the chain failing closed."""

    def __init__(self, interceptor: str, message: str, failed: bool) -> None:
        super().__init__(message)
        self.interceptor = interceptor
        self.message = message
        self.failed = failed


class _NotInstalled(BaseInterceptor):
    """Stands for a name a virtual server lists but no installed plugin registers, so the
    server's calls fail closed (or, failing open, skip it) instead of losing a guard."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def before(self, call: Call) -> Before:
        raise LookupError(f"no installed plugin registers interceptor '{self.name}'")


def before_problem(outcome: object, call: Call) -> str | None:
    """What is wrong with what a `before` step returned, or None when it is well formed."""
    if outcome is None:
        return None
    if isinstance(outcome, UseArguments):
        if call.kind == "resource":
            return "returned UseArguments, but a resource read has no arguments"
        return None if isinstance(outcome.arguments, dict) else "returned non-object arguments"
    if isinstance(outcome, Answer):
        return None if isinstance(outcome.result, dict) else "answered with a non-object result"
    if isinstance(outcome, Refuse):
        return None if isinstance(outcome.message, str) else "refused with a non-text message"
    return f"returned {type(outcome).__name__} from before()"


def after_problem(outcome: object) -> str | None:
    """What is wrong with what an `after` step returned, or None when it is well formed."""
    if outcome is None:
        return None
    if isinstance(outcome, UseResult):
        return None if isinstance(outcome.result, dict) else "returned a non-object result"
    if isinstance(outcome, Refuse):
        return None if isinstance(outcome.message, str) else "refused with a non-text message"
    return f"returned {type(outcome).__name__} from after()"


class Interceptors:
    """Every installed interceptor, built and started once, and the chains that run."""

    def __init__(self, specs: Mapping[str, InterceptorSpec], settings: Settings) -> None:
        self.specs = dict(specs)
        self.settings = settings
        self.timeout = settings.interceptor_timeout
        self.fail_open = settings.interceptors_fail_open
        self.instances: dict[str, Interceptor] = {}
        self.default: tuple[Step, ...] = ()
        self._chains: dict[tuple[str, ...], tuple[Step, ...]] = {}

    async def start(self) -> None:
        try:
            for name, spec in self.specs.items():
                instance = spec.factory(self.settings)
                await instance.start()
                self.instances[name] = instance
        except BaseException:
            await self.close()
            raise
        self.default = self.resolve(self.settings.interceptors)
        if self.default:
            log.info("interceptors in force", interceptors=[s.name for s in self.default])

    async def close(self) -> None:
        for name, instance in reversed(list(self.instances.items())):
            try:
                await instance.close()
            except Exception:
                log.exception("interceptor close failed", interceptor=name)
        self.instances.clear()

    def resolve(self, names: Iterable[str]) -> tuple[Step, ...]:
        """The chain for a list of names: by priority, then by their order in the list."""
        listed = list(dict.fromkeys(names))
        ranked = sorted(
            enumerate(listed),
            key=lambda item: (self._priority(item[1]), item[0]),
        )
        return tuple(Step(name, self._instance(name)) for _, name in ranked)

    def _priority(self, name: str) -> int:
        spec = self.specs.get(name)
        return spec.priority if spec is not None else -1  # a missing guard fails first

    def _instance(self, name: str) -> Interceptor:
        instance = self.instances.get(name)
        return instance if instance is not None else _NotInstalled(name)

    def chain(self, server: ServerRecord | None) -> tuple[Step, ...]:
        """The chain a call through `server` (None: the whole gateway) runs."""
        names = server.interceptors if server is not None else None
        if names is None:
            return self.default
        try:
            return self._chains[names]
        except KeyError:
            chain = self._chains[names] = self.resolve(names)
            return chain

    async def run(self, chain: tuple[Step, ...], call: Call, proceed: Proceed) -> JSON:
        """Run the befores in order, then the upstream (`proceed`) unless one answered, then
        the afters of the steps whose before ran, in reverse. Raises `Intercepted`."""
        ran: list[Step] = []
        result: JSON | None = None
        for step in chain:
            outcome = await self._before(step, call)
            if isinstance(outcome, UseArguments):
                call = replace(call, arguments=outcome.arguments)
            elif isinstance(outcome, Answer):
                result = outcome.result
                break
            elif isinstance(outcome, Refuse):
                log.info("call refused", interceptor=step.name, kind=call.kind, name=call.name)
                INTERCEPTOR_OUTCOMES.labels(step.name, "refused").inc()
                raise Intercepted(
                    step.name, f"Refused by interceptor '{step.name}': {outcome.message}", False
                )
            ran.append(step)
        if result is None:
            result = await proceed(call.arguments)
        if result.get("resultType") == "input_required":
            return result  # not the call's result yet; the afters see the final one
        for step in reversed(ran):
            after = await self._after(step, call, result)
            if isinstance(after, UseResult):
                result = after.result
            elif isinstance(after, Refuse):
                log.info("result refused", interceptor=step.name, kind=call.kind, name=call.name)
                INTERCEPTOR_OUTCOMES.labels(step.name, "refused").inc()
                raise Intercepted(
                    step.name, f"Refused by interceptor '{step.name}': {after.message}", False
                )
        return result

    async def _before(self, step: Step, call: Call) -> Before:
        return await self._ask(
            step, call, lambda: step.interceptor.before(call), lambda o: before_problem(o, call)
        )

    async def _after(self, step: Step, call: Call, result: JSON) -> After:
        return await self._ask(
            step, call, lambda: step.interceptor.after(call, result), after_problem
        )

    async def _ask(
        self,
        step: Step,
        call: Call,
        ask: Callable[[], Awaitable[Outcome]],
        problem_of: Callable[[Outcome], str | None],
    ) -> Outcome | None:
        """The interceptor's answer, or None (counted as its failure) when it took too long,
        raised, or answered something it may not."""
        try:
            async with within(self.timeout):
                outcome = await ask()
        except TimeoutError:
            self._failed(step, call, f"did not answer within {self.timeout:g}s")
            return None
        except Exception as exc:
            self._failed(step, call, f"raised {type(exc).__name__}", exc)
            return None
        problem = problem_of(outcome)
        if problem is None:
            return outcome
        self._failed(step, call, problem)
        return None

    def _failed(
        self, step: Step, call: Call, reason: str, exc: BaseException | None = None
    ) -> None:
        """Return, to skip the step (failing open), or end the call (failing closed); log
        either way."""
        log.warning(
            "interceptor failed",
            interceptor=step.name,
            kind=call.kind,
            name=call.name,
            reason=reason,
            error=str(exc) if exc is not None else None,
            fail_open=self.fail_open,
        )
        INTERCEPTOR_OUTCOMES.labels(step.name, "skipped" if self.fail_open else "failed").inc()
        if self.fail_open:
            return None
        raise Intercepted(step.name, f"Interceptor '{step.name}' failed: {reason}", True)
