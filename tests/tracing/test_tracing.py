"""Tracing against a real OTLP/HTTP receiver: the spans the gateway exports, how they link,
what they carry, and the trace context an upstream receives (header and `_meta`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from gateway.keys import TRACING
from gateway.settings import Settings, load_settings
from gateway.tracing import wanted
from tests.conftest import Client, GatewayFactory, rpc
from tests.plugins.intercepting import Intercepting
from tests.tracing.receivers import OtlpReceiver, RecordingUpstream, Span
from tests.transports.conftest import open_session, session_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INCOMING = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=opaque"}


@pytest.fixture
async def client(
    gateway: GatewayFactory,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> Client:
    """A gateway exporting its spans to `otlp_receiver`, with `recording_upstream` as `rec`."""
    client = await gateway(
        otel_exporter_otlp_endpoint=otlp_receiver.url, otel_bsp_schedule_delay=50
    )
    payload = {"name": "rec", "url": recording_upstream.url, "transport": "streamable-http"}
    registered = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert registered.status == 201, await registered.text()
    return client


def one(spans: list[Span], name: str, trace_id: str = TRACE_ID) -> Span:
    found = [s for s in spans if s.name == name and s.trace_id == trace_id]
    assert len(found) == 1, [(s.name, s.trace_id) for s in spans]
    return found[0]


async def received(
    receiver: OtlpReceiver, name: str, trace_id: str | None = TRACE_ID
) -> list[Span]:
    """The spans received once one named `name` is among them, of `trace_id` (None: any)."""
    return await asyncio.to_thread(
        receiver.wait_for,
        lambda spans: any(s.name == name and trace_id in (None, s.trace_id) for s in spans),
    )


async def test_a_tool_call_continues_the_incoming_trace_through_to_the_upstream(
    client: Client,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> None:
    params = {"name": "rec__echo", "arguments": {"text": "hi"}}
    answer = await rpc(client, "tools/call", params, {**admin_headers, **INCOMING})
    assert answer["result"]["content"][0]["text"] == "hi"

    spans = await received(otlp_receiver, "tools/call echo")
    server = one(spans, "POST /rpc")
    mcp = one(spans, "tools/call rec__echo")
    upstream_call = one(spans, "tools/call echo")
    assert (server.kind, mcp.kind, upstream_call.kind) == ("SERVER", "INTERNAL", "CLIENT")
    assert server.parent_span_id == PARENT_ID
    assert mcp.parent_span_id == server.span_id
    assert upstream_call.parent_span_id == mcp.span_id
    assert server.service == "aio-mcp-gateway"
    assert server.attributes["http.route"] == "/rpc"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["mcp.method.name"] == "tools/call"
    assert server.attributes["gen_ai.tool.name"] == "rec__echo"
    assert upstream_call.attributes["gateway.upstream"] == "rec"
    assert upstream_call.attributes["gen_ai.tool.name"] == "echo"
    assert upstream_call.attributes["gateway.outcome"] == "ok"
    assert upstream_call.status_code != 2

    [seen] = recording_upstream.calls()
    sent = f"00-{TRACE_ID}-{upstream_call.span_id}-01"
    assert seen.traceparent == sent
    assert seen.tracestate == "vendor=opaque"
    assert seen.meta["traceparent"] == sent
    assert seen.meta["tracestate"] == "vendor=opaque"


async def test_a_request_without_traceparent_starts_a_trace_the_upstream_joins(
    client: Client,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> None:
    params = {"name": "rec__echo", "arguments": {"text": "fresh"}}
    await rpc(client, "tools/call", params, admin_headers)
    spans = await received(otlp_receiver, "tools/call echo", trace_id=None)
    upstream_call = next(s for s in spans if s.name == "tools/call echo")
    server = next(
        s
        for s in spans
        if s.span_id != upstream_call.span_id
        and s.kind == "SERVER"
        and s.trace_id == upstream_call.trace_id
    )
    assert server.parent_span_id == ""
    [seen] = recording_upstream.calls()
    assert seen.traceparent is not None
    assert seen.traceparent[:-2] == f"00-{upstream_call.trace_id}-{upstream_call.span_id}-"
    assert int(seen.traceparent[-2:], 16) & 1  # sampled
    assert seen.tracestate is None


async def test_an_unreachable_upstream_makes_an_error_client_span(
    client: Client,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> None:
    recording_upstream.close()
    params = {"name": "rec__echo", "arguments": {"text": "lost"}}
    answer = await rpc(client, "tools/call", params, {**admin_headers, **INCOMING})
    assert answer["result"]["isError"] is True
    spans = await received(otlp_receiver, "tools/call echo")
    upstream_call = one(spans, "tools/call echo")
    assert upstream_call.attributes["gateway.outcome"] == "error"
    assert upstream_call.status_code == 2


async def test_an_mcp_session_is_named_by_a_hash_never_its_id(
    client: Client,
    otlp_receiver: OtlpReceiver,
    admin_headers: dict[str, str],
) -> None:
    session_id = await open_session(client, "2025-06-18", headers=admin_headers)
    session = {**admin_headers, **session_headers(session_id, "2025-06-18")}
    listed = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    answer = await client.post("/mcp", json=listed, headers={**session, **INCOMING})
    assert answer.status == 200, await answer.text()
    spans = await received(otlp_receiver, "tools/list")
    mcp = one(spans, "tools/list")
    server = one(spans, "POST /mcp")
    assert mcp.attributes["gateway.session.hash"] == server.attributes["gateway.session.hash"]
    assert len(mcp.attributes["gateway.session.hash"]) == 16
    everything = [str(v) for s in spans for v in s.attributes.values()]
    assert not any(session_id in value for value in everything)
    assert not any(admin_headers["Authorization"].split()[1] in v for v in everything)


async def test_with_no_endpoint_tracing_is_off_and_installs_nothing(
    gateway: GatewayFactory,
) -> None:
    client = await gateway()
    app: web.Application = client.app
    assert TRACING not in app
    assert len(app.middlewares) == 1
    assert not wanted(Settings())
    assert wanted(Settings(otel_exporter_otlp_endpoint="http://collector:4318"))
    assert not wanted(
        Settings(otel_exporter_otlp_endpoint="http://collector:4318", otel_enabled=False)
    )
    assert not wanted(
        Settings(otel_exporter_otlp_endpoint="http://collector:4318", otel_sdk_disabled=True)
    )


def test_otel_variables_are_read_with_the_other_settings() -> None:
    settings = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,tenant=a",
            "OTEL_SERVICE_NAME": "edge-gateway",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        },
        env_file=None,
        declared=(),
    )
    assert settings.otel_exporter_otlp_headers == (("authorization", "Bearer x"), ("tenant", "a"))
    assert settings.otel_service_name == "edge-gateway"
    assert settings.otel_resource_attributes == (("deployment.environment", "prod"),)
    assert settings.otel_traces_sampler == "parentbased_traceidratio"
    assert settings.otel_traces_sampler_arg == 0.25


def test_bad_otel_variables_are_each_named() -> None:
    try:
        load_settings(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
                "OTEL_TRACES_SAMPLER": "sometimes",
                "OTEL_TRACES_SAMPLER_ARG": "2",
                "OTEL_RESOURCE_ATTRIBUTES": "novalue",
            },
            env_file=None,
            declared=(),
        )
    except Exception as exc:
        problems = "\n".join(getattr(exc, "problems", ()))
    else:
        raise AssertionError("bad OTEL_* values were accepted")
    for variable in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_TRACES_SAMPLER=",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_RESOURCE_ATTRIBUTES",
    ):
        assert variable in problems


STARTS_WITHOUT_OPENTELEMETRY = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import structlog
from aiohttp import web
from structlog.testing import capture_logs
from gateway.app import create_app

async def main():
    runner = web.AppRunner(await create_app())
    await runner.setup()

asyncio.run(main())
"""


def run_script(
    script: str, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`script` in a Python of its own, with `env` and a gateway database in `tmp_path`."""
    env = {
        **env,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "AUTH_ENCRYPTION_SECRET": "tracing-test-secret",
        "JWT_SECRET_KEY": "tracing-test-jwt",
    }
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tracing_configured_without_the_extra_stops_the_start_saying_what_to_install(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    }
    done = run_script(STARTS_WITHOUT_OPENTELEMETRY, env, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "pip install 'aio-mcp-gateway[otel]'" in output
    assert "Traceback" not in output


async def test_without_a_header_a_traceparent_in_meta_parents_the_mcp_request(
    client: Client,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> None:
    params = {"name": "rec__echo", "arguments": {"text": "meta"}, "_meta": INCOMING}
    answer = await rpc(client, "tools/call", params, admin_headers)
    assert answer["result"]["content"][0]["text"] == "meta"
    spans = await received(otlp_receiver, "tools/call echo")
    mcp = one(spans, "tools/call rec__echo")
    upstream_call = one(spans, "tools/call echo")
    assert mcp.parent_span_id == PARENT_ID
    assert upstream_call.parent_span_id == mcp.span_id
    [seen] = recording_upstream.calls()
    assert seen.meta["traceparent"] == f"00-{TRACE_ID}-{upstream_call.span_id}-01"
    assert seen.meta["tracestate"] == "vendor=opaque"


async def test_a_malformed_traceparent_is_ignored_and_a_new_trace_started(
    client: Client,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> None:
    bad = {"traceparent": "00-not-a-trace-01", "tracestate": "vendor=opaque"}
    params = {"name": "rec__echo", "arguments": {"text": "odd"}}
    answer = await rpc(client, "tools/call", params, {**admin_headers, **bad})
    assert answer["result"]["content"][0]["text"] == "odd"
    spans = await received(otlp_receiver, "tools/call echo", trace_id=None)
    server = next(s for s in spans if s.name == "POST /rpc" and s.trace_id)
    assert server.parent_span_id == ""
    assert server.trace_id != "0" * 32
    [seen] = recording_upstream.calls()
    assert seen.traceparent is not None and server.trace_id in seen.traceparent
    assert seen.tracestate is None


STARTS_AND_LISTS_OPENTELEMETRY = """
import asyncio, sys
import structlog
from aiohttp import web
from structlog.testing import capture_logs
from gateway.app import create_app

async def main():
    runner = web.AppRunner(await create_app())
    await runner.setup()
    tracing = ("gateway.otel", "opentelemetry.sdk.trace", "opentelemetry.exporter")
    print(sorted(m for m in sys.modules if m.startswith(tracing)))
    await runner.cleanup()

asyncio.run(main())
"""


def test_with_tracing_off_a_started_gateway_never_imports_the_tracing_sdk(tmp_path: Path) -> None:
    # Only the SDK's tracing and the exporter are the gateway's to import: redis-py imports
    # OpenTelemetry's metrics API by itself whenever OpenTelemetry is installed.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key != "CI"
    }
    env["LOG_LEVEL"] = "warning"
    done = run_script(STARTS_AND_LISTS_OPENTELEMETRY, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


META_SERVER = str(Path(__file__).with_name("meta_stdio_server.py"))


async def test_a_stdio_upstream_gets_the_trace_context_in_meta(
    gateway: GatewayFactory, otlp_receiver: OtlpReceiver, admin_headers: dict[str, str]
) -> None:
    client = await gateway(
        otel_exporter_otlp_endpoint=otlp_receiver.url,
        otel_bsp_schedule_delay=50,
        tool_timeout=30.0,
        plugin_values={"STDIO_COMMANDS": (sys.executable,)},
    )
    payload = {"name": "pipe", "transport": "stdio", "command": sys.executable}
    registered = await client.post(
        "/upstreams", json={**payload, "args": [META_SERVER]}, headers=admin_headers
    )
    assert registered.status == 201, await registered.text()
    params = {"name": "pipe__meta", "arguments": {}}
    answer = await rpc(client, "tools/call", params, {**admin_headers, **INCOMING})
    meta = orjson.loads(answer["result"]["content"][0]["text"])
    spans = await received(otlp_receiver, "tools/call meta")
    upstream_call = one(spans, "tools/call meta")
    assert upstream_call.attributes["gateway.upstream"] == "pipe"
    assert meta["traceparent"] == f"00-{TRACE_ID}-{upstream_call.span_id}-01"
    assert meta["tracestate"] == "vendor=opaque"


async def test_log_lines_of_a_traced_request_carry_its_trace_and_span_ids(
    gateway: GatewayFactory,
    otlp_receiver: OtlpReceiver,
    recording_upstream: RecordingUpstream,
    admin_headers: dict[str, str],
) -> None:
    client = await gateway(
        plugins=[Intercepting()],
        otel_exporter_otlp_endpoint=otlp_receiver.url,
        otel_bsp_schedule_delay=50,
        access_log="json",
        interceptors=("raises",),
    )
    payload = {"name": "rec", "url": recording_upstream.url, "transport": "streamable-http"}
    registered = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert registered.status == 201, await registered.text()
    params = {"name": "rec__echo", "arguments": {"text": "logged"}}
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await rpc(client, "tools/call", params, {**admin_headers, **INCOMING})
        await rpc(client, "tools/call", {**params, "_meta": INCOMING}, admin_headers)
    spans = await asyncio.to_thread(
        otlp_receiver.wait_for, lambda spans: len([s for s in spans if s.name == "POST /rpc"]) == 2
    )
    headed, meta_only = [s for s in spans if s.name == "POST /rpc"]
    mcp_spans = [s for s in spans if s.name == "tools/call rec__echo"]
    assert [(s.trace_id, s.parent_span_id) for s in mcp_spans] == [
        (TRACE_ID, headed.span_id),
        (TRACE_ID, PARENT_ID),
    ]
    ids = [(e["event"], e.get("trace_id"), e.get("span_id")) for e in logs]
    # The interceptor's line is written inside the MCP request's span, the access line
    # after it closed; a `_meta` context makes only the MCP request join the client's trace.
    assert ids == [
        ("interceptor failed", TRACE_ID, mcp_spans[0].span_id),
        ("request", TRACE_ID, headed.span_id),
        ("interceptor failed", TRACE_ID, mcp_spans[1].span_id),
        ("request", meta_only.trace_id, meta_only.span_id),
    ]
    assert meta_only.trace_id != TRACE_ID


def test_plugins_import_with_trace_meta_from_the_plugin_api() -> None:
    from gateway import plugin, tracing

    assert plugin.with_trace_meta is tracing.with_trace_meta
    assert "with_trace_meta" in plugin.__all__
    assert "with_trace_meta(params)" in (plugin.__doc__ or "")
