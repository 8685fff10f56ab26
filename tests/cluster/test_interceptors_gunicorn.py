"""Interceptors under gunicorn with 2 workers, as an operator enables them: `INTERCEPTORS`
and `GUARDRAILS_RULES` in the environment, the guardrails package installed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.cluster.deployment import worker_views
from tests.cluster.test_gunicorn_e2e import call, register
from tests.interceptors.conftest import require_guardrails
from tests.support.gunicorn_process import USER, StartGunicorn, gunicorn_env
from tests.upstreams.processes import RunningUpstream

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

CALLS = 24
RULES = {"own__echo": {"deny": [r"(?i)\bdrop\s+table\b"]}}


async def test_every_worker_redacts_and_refuses_with_the_guardrails(
    gunicorn: StartGunicorn, own_upstream: RunningUpstream, tmp_path: Path
) -> None:
    require_guardrails()
    env = gunicorn_env(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        CACHE_TYPE="database",
        INTERCEPTORS="rules,pii",
        GUARDRAILS_RULES=orjson.dumps(RULES).decode(),
        CATALOGUE_POLL_INTERVAL="0.2",
    )
    gateway = gunicorn(env, workers=2)
    assert len(await worker_views(gateway.url, workers=2, within=30.0)) == 2
    await register(gateway.url, own_upstream.url)
    await asyncio.sleep(1.0)  # both workers poll the catalogue every 0.2 s

    text = "mail ann.lee@example.com, card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE"
    params = {"name": "own__echo", "arguments": {"text": text}}
    replies = await asyncio.gather(
        *(call(gateway.url, "tools/call", params, USER) for _ in range(CALLS))
    )
    expected = "mail [REDACTED:email], card [REDACTED:card], key [REDACTED:secret]"
    for reply in replies:
        result = reply["result"]
        assert isinstance(result, dict), reply
        assert result["content"] == [{"type": "text", "text": expected}]
        assert result["structuredContent"] == {"text": expected}

    denied = {"name": "own__echo", "arguments": {"text": "drop table users"}}
    refused = (await call(gateway.url, "tools/call", denied, USER))["result"]
    assert isinstance(refused, dict) and refused["isError"] is True
    assert "Refused by interceptor 'rules'" in refused["content"][0]["text"]

    # Each worker built the chain at start; every call but the refused one went upstream.
    assert gateway.log_path.read_text().count('"interceptors in force"') == 2
    assert (await own_upstream.stats())["tools_call"] == CALLS
