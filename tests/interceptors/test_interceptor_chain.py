"""The interceptor chain around tools/call, resources/read and prompts/get, through `/rpc`
and `/mcp` against a real upstream: what each step can do, the order steps run in, which
interceptors run where, and how a misbehaving interceptor fails the call."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.keys import INTERCEPTORS
from tests.core.test_settings import run_python
from tests.plugins.intercepting import Intercepting, text_of
from tests.upstreams.processes import RunningUpstream

from .conftest import JSON, Send, Start, echo, require_guardrails


def tool_text(response: JSON) -> str:
    assert "result" in response, response
    return text_of(response["result"])


# --- before ------------------------------------------------------------------------------------


async def test_with_no_interceptor_configured_the_chain_is_empty(start: Start, send: Send) -> None:
    client = await start()
    assert client.app[INTERCEPTORS].default == ()
    assert tool_text(await send(client, "tools/call", echo("plain"))) == "plain"


async def test_before_changes_the_arguments_the_upstream_gets(start: Start, send: Send) -> None:
    client = await start(interceptors=("upper",))
    response = await send(client, "tools/call", echo("quiet"))
    assert tool_text(response) == "QUIET"
    assert response["result"]["structuredContent"] == {"text": "QUIET"}


async def test_before_sees_the_caller_the_tool_and_the_arguments(
    start: Start, send: Send, intercepting: Intercepting
) -> None:
    client = await start(interceptors=("upper",))
    await send(client, "tools/call", echo("who"))
    seen = intercepting["upper"].seen[-1]
    assert (seen.caller.subject, seen.kind, seen.name, seen.upstream, seen.server) == (
        "user",
        "tool",
        "own__echo",
        "own",
        None,
    )
    assert seen.arguments == {"text": "who"}


async def test_a_refusal_is_an_error_result_naming_the_interceptor_and_skips_the_upstream(
    start: Start, send: Send, own_upstream: RunningUpstream
) -> None:
    client = await start(interceptors=("refuse",))
    response = await send(client, "tools/call", echo("a forbidden word"))
    result = response["result"]
    assert result["isError"] is True
    assert text_of(result) == "Refused by interceptor 'refuse': forbidden words are not allowed"
    assert (await own_upstream.stats()).get("tools_call", 0) == 0


async def test_before_can_answer_without_calling_the_upstream(
    start: Start, send: Send, own_upstream: RunningUpstream
) -> None:
    client = await start(interceptors=("answer", "stamp"))
    response = await send(client, "tools/call", echo("anything"))
    # `stamp` (priority 60) wraps `answer` (70): it sees the answer as the result.
    assert tool_text(response) == "answered by the gateway [stamped]"
    assert (await own_upstream.stats()).get("tools_call", 0) == 0


async def test_the_legacy_sse_transport_passes_the_same_chain(start: Start) -> None:
    from tests.transports.conftest import init_message, streams_attached
    from tests.transports.test_mcp_sse import open_sse

    client = await start(interceptors=("refuse", "upper"))
    sse = await open_sse(client)
    await streams_attached(client, 1)
    await sse.request("initialize", init_message()["params"])
    changed = await sse.request("tools/call", echo("over sse"), request_id=2)
    assert tool_text(changed) == "OVER SSE"
    refused = await sse.request("tools/call", echo("forbidden"), request_id=3)
    assert refused["result"]["isError"] is True
    assert text_of(refused["result"]).startswith("Refused by interceptor 'refuse'")


# --- after -------------------------------------------------------------------------------------


async def test_after_changes_the_result(start: Start, send: Send) -> None:
    client = await start(interceptors=("stamp",))
    assert tool_text(await send(client, "tools/call", echo("hello"))) == "hello [stamped]"


async def test_after_turns_the_result_into_an_error(start: Start, send: Send) -> None:
    client = await start(interceptors=("refuse_result",))
    result = (await send(client, "tools/call", echo("hello")))["result"]
    assert result["isError"] is True
    assert "Refused by interceptor 'refuse_result'" in text_of(result)
    assert "hello" not in str(result)


async def test_steps_run_by_priority_and_afters_in_reverse(
    start: Start, send: Send, intercepting: Intercepting
) -> None:
    client = await start(interceptors=("last", "stamp", "upper", "first"))
    assert tool_text(await send(client, "tools/call", echo("x"))) == "X [stamped]"
    assert intercepting.trace == [
        "first.before",
        "upper.before",
        "stamp.before",
        "last.before",
        "last.after",
        "stamp.after",
        "upper.after",
        "first.after",
    ]


async def test_a_refusal_stops_the_chain_and_no_after_runs(
    start: Start, send: Send, intercepting: Intercepting
) -> None:
    client = await start(interceptors=("first", "refuse", "upper"))
    await send(client, "tools/call", echo("forbidden"))
    assert intercepting.trace == ["first.before", "refuse.before"]


# --- resources and prompts ---------------------------------------------------------------------


async def test_resources_read_passes_the_chain(
    start: Start, send: Send, intercepting: Intercepting
) -> None:
    client = await start(interceptors=("stamp",))
    response = await send(client, "resources/read", {"uri": "memo://one"})
    assert response["result"]["stamped"] is True
    seen = intercepting["stamp"].seen[-1]
    assert (seen.kind, seen.name, seen.arguments) == ("resource", "memo://one", {})


async def test_prompts_get_passes_the_chain_with_changed_arguments(
    start: Start, send: Send
) -> None:
    client = await start(interceptors=("upper",))
    response = await send(
        client, "prompts/get", {"name": "own__greeting", "arguments": {"name": "ann"}}
    )
    assert "ANN" in str(response["result"]["messages"])


async def test_a_refused_prompt_is_a_json_rpc_error_naming_the_interceptor(
    start: Start, send: Send
) -> None:
    client = await start(interceptors=("refuse",))
    params = {"name": "own__greeting", "arguments": {"name": "forbidden"}}
    error = (await send(client, "prompts/get", params))["error"]
    assert error["code"] == -32602
    assert error["message"].startswith("Refused by interceptor 'refuse'")
    assert error["data"] == {"interceptor": "refuse"}


async def test_a_failing_interceptor_on_a_resource_is_an_internal_error(
    start: Start, send: Send
) -> None:
    client = await start(interceptors=("raises",))
    error = (await send(client, "resources/read", {"uri": "memo://one"}))["error"]
    assert error["code"] == -32603
    assert error["message"] == "Interceptor 'raises' failed: raised RuntimeError"


async def test_changing_a_resource_reads_arguments_is_malformed(start: Start, send: Send) -> None:
    client = await start(interceptors=("resource_arguments",))
    error = (await send(client, "resources/read", {"uri": "memo://one"}))["error"]
    assert "resource read has no arguments" in error["message"]


# --- misbehaving interceptors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("raises", "raised RuntimeError"),
        ("raises_after", "raised RuntimeError"),
        ("hangs", "did not answer within 0.3s"),
        ("hangs_after", "did not answer within 0.3s"),
        ("junk", "returned str from before()"),
        ("junk_after", "returned str from after()"),
    ],
)
async def test_a_misbehaving_interceptor_fails_the_call_closed_naming_it(
    start: Start, send: Send, name: str, reason: str
) -> None:
    client = await start(interceptors=(name,), interceptor_timeout=0.3)
    with capture_logs() as logs:
        result = (await send(client, "tools/call", echo("secret text")))["result"]
    assert result["isError"] is True
    assert text_of(result) == f"Interceptor '{name}' failed: {reason}"
    assert "secret details" not in str(result)
    failures = [e for e in logs if e["event"] == "interceptor failed"]
    assert [(e["interceptor"], e["reason"], e["fail_open"]) for e in failures] == [
        (name, reason, False)
    ]


@pytest.mark.parametrize("name", ["raises", "hangs", "junk", "raises_after", "junk_after"])
async def test_with_fail_open_a_misbehaving_interceptor_is_skipped_and_logged(
    start: Start, send: Send, name: str
) -> None:
    client = await start(
        interceptors=(name, "stamp"), interceptor_timeout=0.3, interceptors_fail_open=True
    )
    with capture_logs() as logs:
        response = await send(client, "tools/call", echo("through"))
    assert tool_text(response) == "through [stamped]"
    assert [e["fail_open"] for e in logs if e["event"] == "interceptor failed"] == [True]


async def test_metrics_count_refusals_failures_and_skips_by_interceptor(
    start: Start, admin_headers: dict[str, str]
) -> None:
    from tests.conftest import rpc

    client = await start(interceptors=("refuse", "raises_after"), interceptor_timeout=0.3)
    await rpc(client, "tools/call", echo("forbidden"))
    await rpc(client, "tools/call", echo("fine"))
    text = await (await client.get("/metrics", headers=admin_headers)).text()
    counted = 'gateway_interceptor_outcomes_total{{interceptor="{}",outcome="{}"}}'
    assert counted.format("refuse", "refused") in text
    assert counted.format("raises_after", "failed") in text


async def test_a_failing_interceptor_leaves_other_calls_alone(start: Start, send: Send) -> None:
    client = await start(interceptors=("hangs",), interceptor_timeout=0.3)
    assert (await send(client, "tools/call", echo("a")))["result"]["isError"] is True
    response = await send(client, "ping", {})
    assert response["result"] == {}


# --- which interceptors run --------------------------------------------------------------------


async def test_an_unknown_name_in_interceptors_stops_start_up_listing_the_installed(
    start: Start,
) -> None:
    from gateway.plugins import Plugins, build_plugin_manager
    from gateway.settings import Settings, SettingsError

    pm = build_plugin_manager()
    pm.register(Intercepting(), name="intercepting")
    with pytest.raises(SettingsError, match=r"INTERCEPTORS='nope' .*installed: .*stamp"):
        Plugins(pm).check(Settings(interceptors=("nope",), auth_required=False))


def test_the_check_command_lists_the_installed_interceptors(tmp_path: Path) -> None:
    completed = run_python(tmp_path, {"INTERCEPTORS": "nope"}, "-m", "gateway", "check")
    assert completed.returncode == 2
    assert "INTERCEPTORS='nope' is not an installed interceptor plugin" in completed.stderr
    completed = run_python(tmp_path, {}, "-m", "gateway", "check")
    assert completed.returncode == 0, completed.stderr
    listed = completed.stdout.strip().rsplit("; interceptors: ", 1)[1].split(", ")
    require_guardrails()
    assert {"pii", "rules"} <= set(listed)


SERVER: JSON = {"id": "guarded", "tools": ["own__echo"], "interceptors": ["upper", "stamp"]}


async def test_a_virtual_server_runs_its_own_interceptors(
    start: Start, send: Send, admin_headers: dict[str, str]
) -> None:
    client = await start(interceptors=("refuse",))
    created = await client.post("/servers", json=SERVER, headers=admin_headers)
    assert created.status == 201, await created.text()
    assert (await created.json())["interceptors"] == ["upper", "stamp"]
    path = "/servers/guarded/mcp"
    # The server's list replaces the gateway's: `refuse` does not run there.
    assert tool_text(await send(client, "tools/call", echo("forbidden"), path=path)) == (
        "FORBIDDEN [stamped]"
    )
    refused = await send(client, "tools/call", echo("forbidden"))
    assert refused["result"]["isError"] is True


async def test_a_virtual_server_with_an_empty_list_runs_none_and_null_follows_the_gateway(
    start: Start, send: Send, admin_headers: dict[str, str]
) -> None:
    client = await start(interceptors=("stamp",))
    server = {**SERVER, "interceptors": []}
    assert (await client.post("/servers", json=server, headers=admin_headers)).status == 201
    path = "/servers/guarded/mcp"
    assert tool_text(await send(client, "tools/call", echo("a"), path=path)) == "a"
    patched = await client.patch(
        "/servers/guarded", json={"interceptors": None}, headers=admin_headers
    )
    assert (await patched.json())["interceptors"] is None
    assert tool_text(await send(client, "tools/call", echo("a"), path=path)) == "a [stamped]"


async def test_a_virtual_server_naming_an_unknown_interceptor_is_refused_with_422(
    start: Start, admin_headers: dict[str, str]
) -> None:
    client = await start()
    server = {**SERVER, "interceptors": ["upper", "nope"]}
    response = await client.post("/servers", json=server, headers=admin_headers)
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "unknown interceptor(s): nope" in message
    assert "installed: " in message and "upper" in message
