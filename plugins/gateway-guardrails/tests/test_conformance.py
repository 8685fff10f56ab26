"""Both guardrails interceptors pass the gateway's interceptor conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from gateway.testing.interceptor_conformance import InterceptorConformance

from gateway_guardrails.pii import PiiInterceptor
from gateway_guardrails.redaction import Redactor
from gateway_guardrails.rules import RulesInterceptor, parse_rules

RULES = {
    "db__*": {"deny": [r"(?i)\bdrop\s+table\b"], "max_argument_bytes": 100},
    "text__*": {"max_argument_bytes": 1000},
    "*": {"max_result_bytes": 10_000},
}


class TestPii(InterceptorConformance):
    @pytest.fixture
    async def interceptor(self) -> AsyncIterator[PiiInterceptor]:
        interceptor = PiiInterceptor(Redactor())
        await interceptor.start()
        yield interceptor
        await interceptor.close()


class TestRules(InterceptorConformance):
    @pytest.fixture
    async def interceptor(self) -> AsyncIterator[RulesInterceptor]:
        interceptor = RulesInterceptor(
            parse_rules("GUARDRAILS_RULES", orjson.dumps(RULES).decode())
        )
        await interceptor.start()
        yield interceptor
        await interceptor.close()
