"""Tracing under gunicorn with 2 workers: each worker makes its own tracer provider after
the fork, and every span, held back by a batch delay longer than the test, reaches the OTLP
receiver when the workers stop (the flush on shutdown), each trace whole."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import orjson
import pytest

from tests.support.gunicorn_process import ADMIN, USER, StartGunicorn, admin_post, gunicorn_env
from tests.tracing.receivers import OtlpReceiver, RecordingUpstream

pytestmark = pytest.mark.timeout(180)


async def one_session_per_worker(url: str, workers: int) -> dict[int, aiohttp.ClientSession]:
    """A keep-alive connection to each worker: fresh connections until `/version` has named
    every worker's pid, so the test decides which worker serves each call."""
    found: dict[int, aiohttp.ClientSession] = {}
    for _ in range(400):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with session.get(f"{url}/version") as response:
            pid = int((await response.json())["worker"])
        if pid in found:
            await session.close()
        else:
            found[pid] = session
        if len(found) == workers:
            return found
    for session in found.values():
        await session.close()
    pytest.fail(f"only workers {sorted(found)} answered 400 fresh connections")


async def traced_call(
    session: aiohttp.ClientSession, url: str, trace_id: str, parent_id: str, text: str
) -> None:
    """One call on the given worker's connection."""
    headers = {**USER, "traceparent": f"00-{trace_id}-{parent_id}-01"}
    payload = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "rec__echo", "arguments": {"text": text}},
    }
    async with session.post(f"{url}/rpc", json=payload, headers=headers) as response:
        assert response.status == 200, await response.text()
        body = orjson.loads(await response.read())
    assert body["result"]["content"][0]["text"] == text, body


async def test_each_worker_traces_on_its_own_and_flushes_its_spans_when_it_stops(
    gunicorn: StartGunicorn,
    sqlite_url: str,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
) -> None:
    env = gunicorn_env(
        sqlite_url,
        CACHE_TYPE="database",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url,
        OTEL_SERVICE_NAME="gateway-under-test",
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    gateway = await asyncio.to_thread(gunicorn, env, 2)
    body = {"name": "rec", "url": recording_upstream.url, "transport": "streamable-http"}
    await asyncio.to_thread(admin_post, gateway.url, "/upstreams", body, ADMIN)
    await asyncio.sleep(1.5)  # the other worker's catalogue follows the store

    traces = {secrets.token_hex(16): secrets.token_hex(8) for _ in range(24)}
    sessions = list((await one_session_per_worker(gateway.url, 2)).values())
    try:
        for i, (trace_id, parent_id) in enumerate(traces.items()):
            session = sessions[i % len(sessions)]
            await traced_call(session, gateway.url, trace_id, parent_id, f"call {i}")
    finally:
        for session in sessions:
            await session.close()
    assert otlp_receiver.spans == []  # held back by the batch delay until the workers stop
    await asyncio.to_thread(gateway.stop)

    spans = otlp_receiver.spans
    instances = {span.instance for span in spans if span.trace_id in traces}
    assert len(instances) == 2, instances
    assert {span.service for span in spans} == {"gateway-under-test"}
    sent = {seen.traceparent for seen in recording_upstream.calls()}
    for trace_id, parent_id in traces.items():
        mine = {span.name: span for span in spans if span.trace_id == trace_id}
        server, mcp, client = (
            mine["POST /rpc"],
            mine["tools/call rec__echo"],
            mine["tools/call echo"],
        )
        assert server.parent_span_id == parent_id
        assert mcp.parent_span_id == server.span_id
        assert client.parent_span_id == mcp.span_id
        assert client.attributes["gateway.upstream"] == "rec"
        assert server.instance == mcp.instance == client.instance
        assert f"00-{trace_id}-{client.span_id}-01" in sent
