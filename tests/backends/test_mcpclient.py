"""The MCP client package on its own: the SSE parser, JSON-RPC wire helpers, catalogue
paging, backoff, and the client session over an in-process transport, which shows that a
transport provides only `_open`, `_post` and `_listen_on`. The HTTP transports are tested
against real upstreams in test_backend_mcp_http.py and test_backend_mcp_sse.py."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from gateway.contracts import JSON, BackendError, ToolDef, UpstreamConfig, UpstreamError
from gateway.mcpclient import (
    Backoff,
    Call,
    Link,
    ListenOutcome,
    McpClient,
    SessionExpired,
    SseEvent,
    SseParser,
)
from gateway.mcpclient.asking import unanswered
from gateway.mcpclient.catalogue import (
    MAX_PAGES,
    collect,
    prompt_def,
    resource_def,
    resource_template_def,
    tool_def,
)
from gateway.mcpclient.link import RECONNECT_MAX, RECONNECT_MIN
from gateway.mcpclient.wire import (
    client_capabilities,
    related_request,
    rpc_result,
    with_progress_token,
)
from gateway.settings import Settings
from tests.upstreams.fixtures import Recorder

# --- the SSE parser ------------------------------------------------------------------------


def feed_all(parser: SseParser, *chunks: bytes) -> list[SseEvent]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_accepts_every_line_ending_split_anywhere(eol: bytes) -> None:
    stream = eol.join([b"event: update", b"data: one", b"data:two", b"", b""])
    for cut in range(len(stream) + 1):
        events = feed_all(SseParser(), stream[:cut], stream[cut:])
        assert events == [SseEvent("update", b"one\ntwo")], cut


def test_sse_parser_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    stream = b"data: " + b"x" * 5000 + b"\r\n\r\nevent: e\r\ndata: a\r\ndata: b\r\n\r\n"
    events = feed_all(SseParser(), *(stream[i : i + 1] for i in range(len(stream))))
    assert events == [SseEvent("message", b"x" * 5000), SseEvent("e", b"a\nb")]


def test_sse_parser_skips_comments_and_events_without_data() -> None:
    parser = SseParser()
    events = feed_all(parser, b": keep-alive\n\nevent: ping\n\nid: 7\ndata: x\n\n")
    assert events == [SseEvent("message", b"x")]
    assert parser.last_event_id == "7"


def test_sse_parser_keeps_the_last_id_and_retry_and_ignores_bad_ones() -> None:
    parser = SseParser()
    feed_all(parser, b"id: 1\nretry: 2500\ndata: a\n\nid: 2\0\nretry: soon\ndata: b\n\n")
    assert (parser.last_event_id, parser.retry) == ("1", 2500)


def test_sse_parser_ignores_a_leading_bom_and_an_unfinished_event() -> None:
    events = feed_all(SseParser(), b"\xef\xbb", b"\xbfdata: a\n\n", b"data: b\n")
    assert events == [SseEvent("message", b"a")]


def test_sse_parser_takes_a_bom_only_at_the_very_start() -> None:
    events = feed_all(SseParser(), b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    assert events == [SseEvent("message", b"a")]


def test_sse_parser_keeps_field_values_with_colons_and_no_space() -> None:
    events = feed_all(SseParser(), b'data:{"a": "b:c"}\n\n')
    assert events == [SseEvent("message", b'{"a": "b:c"}')]


def test_sse_parser_dispatches_a_bare_data_field_as_empty_data() -> None:
    assert feed_all(SseParser(), b"data\n\n") == [SseEvent("message", b"")]


# --- JSON-RPC on the wire ------------------------------------------------------------------


def test_an_error_reply_raises_upstream_error_with_code_message_and_data() -> None:
    reply = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "no", "data": 7}}
    with pytest.raises(UpstreamError) as caught:
        rpc_result("u", reply, "resources/read")
    assert (caught.value.code, caught.value.upstream_message, caught.value.data) == (
        -32002,
        "no",
        7,
    )


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ({"error": {"code": "x"}}, "upstream 'u' sent a malformed error for m: {'code': 'x'}"),
        ({"error": {"code": True}}, "upstream 'u' sent a malformed error for m: {'code': True}"),
        ({"result": [1]}, "upstream 'u' sent a non-object result for m"),
        ({}, "upstream 'u' sent a non-object result for m"),
    ],
)
def test_an_unusable_reply_raises_backend_error(reply: JSON, message: str) -> None:
    with pytest.raises(BackendError) as caught:
        rpc_result("u", reply, "m")
    assert not isinstance(caught.value, UpstreamError)
    assert str(caught.value) == message


def test_server_requests_no_client_can_answer_get_pong_for_ping_and_32601_for_the_rest() -> None:
    assert unanswered({"id": "a", "method": "ping"}, "outside a request") == {
        "jsonrpc": "2.0",
        "id": "a",
        "result": {},
    }
    assert unanswered({"id": 3, "method": "roots/list"}, "outside a request")["error"] == {
        "code": -32601,
        "message": "no client can be asked for roots/list outside a request",
    }


def test_client_capabilities_declare_elicitation_modes_from_2025_11_25_on() -> None:
    assert client_capabilities("2025-06-18") == {
        "roots": {"listChanged": True},
        "sampling": {},
        "elicitation": {},
    }
    assert client_capabilities("2025-11-25")["elicitation"] == {"form": {}, "url": {}}


def test_a_related_request_id_is_read_from_meta_and_removed_from_a_copy() -> None:
    params: JSON = {"x": 1, "_meta": {"relatedRequestId": 7, "progressToken": "p"}}
    assert related_request(params) == (7, {"x": 1, "_meta": {"progressToken": "p"}})
    assert related_request({"x": 1, "_meta": {"relatedRequestId": 7}}) == (7, {"x": 1})
    assert related_request({"x": 1}) == (None, {"x": 1})
    assert params["_meta"]["relatedRequestId"] == 7


def test_a_progress_token_is_added_to_a_copy_of_the_callers_params() -> None:
    params: JSON = {"name": "t", "_meta": {"other": 1}}
    assert with_progress_token(params, "ours") == {
        "name": "t",
        "_meta": {"other": 1, "progressToken": "ours"},
    }
    assert params == {"name": "t", "_meta": {"other": 1}}


# --- catalogues ----------------------------------------------------------------------------


async def test_a_listing_is_followed_to_its_last_page_skipping_malformed_entries() -> None:
    pages: dict[str | None, JSON] = {
        None: {"tools": [{"name": "a"}, {"name": ""}, "junk"], "nextCursor": "p2"},
        "p2": {"tools": [{"name": "b", "inputSchema": {"type": "object"}}, {"title": "x"}]},
    }
    asked: list[JSON | None] = []

    async def fetch(params: JSON | None) -> JSON:
        asked.append(params)
        return pages[params["cursor"] if params else None]

    tools = await collect("u", "tools/list", "tools", tool_def, fetch)
    assert tools == [
        ToolDef(name="a", input_schema={"type": "object"}),
        ToolDef(name="b", input_schema={"type": "object"}),
    ]
    assert asked == [None, {"cursor": "p2"}]


def test_a_tool_that_runs_only_as_a_task_is_left_out_and_the_rest_lose_execution() -> None:
    def listed(task_support: object) -> ToolDef | None:
        return tool_def({"name": "t", "execution": {"taskSupport": task_support}})

    assert listed("required") is None
    plain = ToolDef(name="t", input_schema={"type": "object"})
    assert listed("optional") == listed("forbidden") == listed(None) == plain


def test_icons_and_meta_are_kept_as_listed_and_malformed_ones_left_out() -> None:
    icon = {"src": "https://icons.example/t.png", "sizes": ["48x48"], "theme": "dark"}
    meta = {"vendor.example/x": {"n": 1}}
    listed = tool_def({"name": "t", "icons": [icon, {"sizes": []}, "junk"], "_meta": meta})
    assert listed == ToolDef(name="t", input_schema={"type": "object"}, icons=(icon,), meta=meta)
    malformed = tool_def({"name": "t", "icons": {"src": "x"}, "_meta": ["x"]})
    assert malformed == ToolDef(name="t", input_schema={"type": "object"})


def test_unknown_fields_are_kept_as_listed_and_never_a_field_the_gateway_models() -> None:
    unknown = {"x-vendor": {"n": [1, None]}, "futureField": "later", "x-null": None}
    tool = tool_def(
        {"name": "t", "inputSchema": "junk", "title": 7, "execution": {}, "_meta": 1, **unknown}
    )
    assert tool == ToolDef(name="t", input_schema={"type": "object"}, extra=unknown)
    resource = resource_def({"uri": "file:///r", "size": -1, "mimeType": 2, **unknown})
    assert resource is not None and resource.extra == unknown
    templates = resource_template_def({"uriTemplate": "file:///{p}", "name": 3, **unknown})
    assert templates is not None and templates.extra == unknown
    prompt = prompt_def({"name": "p", "arguments": "none", "icons": [], **unknown})
    assert prompt is not None and prompt.extra == unknown
    assert tool_def({"name": "t", "execution": {"taskSupport": "optional"}}) == ToolDef(
        name="t", input_schema={"type": "object"}
    )


@pytest.mark.parametrize(
    ("size", "kept"),
    [(0, 0), (2**63 - 1, 2**63 - 1), (-1, None), (2**63, None), (True, None), (1.5, None)],
)
def test_a_resource_size_is_kept_only_if_a_store_column_holds_it(
    size: object, kept: object
) -> None:
    listed = resource_def({"uri": "file:///r", "size": size})
    assert listed is not None and listed.size == kept


async def test_a_listing_the_upstream_does_not_know_is_empty() -> None:
    async def fetch(params: JSON | None) -> JSON:
        raise UpstreamError("u", -32601, "Method not found")

    assert await collect("u", "prompts/list", "prompts", tool_def, fetch) == []


async def test_a_repeated_cursor_fails_instead_of_looping() -> None:
    async def fetch(params: JSON | None) -> JSON:
        return {"tools": [], "nextCursor": "same"}

    with pytest.raises(BackendError, match="sent a bad or repeated tools/list cursor"):
        await collect("u", "tools/list", "tools", tool_def, fetch)


async def test_a_listing_whose_cursors_never_end_fails_after_max_pages() -> None:
    asked: list[JSON | None] = []

    async def fetch(params: JSON | None) -> JSON:
        asked.append(params)
        return {"tools": [{"name": f"t{len(asked)}"}], "nextCursor": f"page-{len(asked)}"}

    with pytest.raises(BackendError, match=f"sent more than {MAX_PAGES} pages of tools/list"):
        await collect("u", "tools/list", "tools", tool_def, fetch)
    assert len(asked) == MAX_PAGES


# --- backoff -------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_ceiling_never_below_the_servers_retry() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays[:3] == [RECONNECT_MIN, RECONNECT_MIN * 2, RECONNECT_MIN * 4]
    assert max(delays) == RECONNECT_MAX
    backoff.reset()
    backoff.least = 3.0
    assert [backoff.next_delay() for _ in range(2)] == [3.0, 3.0]


# --- the session over an in-process transport -----------------------------------------------


class Server:
    """An MCP server in this process: it pages `tools/list`, sends progress for `count`,
    never answers `wait`, and forgets its sessions when told to."""

    def __init__(self) -> None:
        self.generation = 1
        self.received: list[JSON] = []

    def handle(self, link: Link, message: JSON) -> list[JSON]:
        """The messages the server sends back for `message`."""
        self.received.append(message)
        method, params = message.get("method"), message.get("params") or {}
        if "id" not in message or method == "wait":
            return []
        if method == "initialize":
            link.session_id = str(self.generation)
            result: JSON = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}}
        elif link.session_id != str(self.generation):
            raise SessionExpired("loop", str(method))
        elif method == "tools/list":
            cursor = params.get("cursor")
            result = {"tools": [{"name": cursor or "first"}]}
            if cursor is None:
                result["nextCursor"] = "second"
        else:
            token = params["_meta"]["progressToken"]
            notes = [
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                    "progressToken": token, "progress": step, "total": params["steps"]
                }}
                for step in range(1, params["steps"] + 1)
            ]  # fmt: skip
            return [*notes, {"jsonrpc": "2.0", "id": message["id"], "result": {"token": token}}]
        return [{"jsonrpc": "2.0", "id": message["id"], "result": result}]

    def methods(self) -> list[Any]:
        return [message.get("method") for message in self.received]


class Loopback(McpClient[Link]):
    """Replies come back on the request's own stream, as on Streamable HTTP."""

    protocol_version = "2025-06-18"

    def __init__(self, server: Server) -> None:
        super().__init__(UpstreamConfig("loop", "loopback"), Settings(tool_timeout=5))
        self.server = server

    async def _open(self) -> Link:
        return Link(self.name)

    async def _post(self, link: Link, message: JSON, call: Call | None) -> None:
        for sent in self.server.handle(link, message):
            await self._receive(link, sent, call)

    async def _listen_on(self, link: Link, backoff: Backoff) -> ListenOutcome:
        return ListenOutcome.NO_STREAM


class SharedLoopback(Loopback):
    """Everything comes back on one stream, as on the legacy HTTP+SSE transport."""

    shared_stream: ClassVar[bool] = True

    async def _post(self, link: Link, message: JSON, call: Call | None) -> None:
        for sent in self.server.handle(link, message):
            await self._receive(link, sent)


async def test_a_transport_provides_only_open_post_and_listen() -> None:
    server = Server()
    client = Loopback(server)
    await client.start()
    try:
        tools = await client.list_tools()
        result = await client.request("count", {"steps": 1, "_meta": {"progressToken": 1}}, 5)
    finally:
        await client.close()
    assert [tool.name for tool in tools] == ["first", "second"]
    assert result == {"token": 1}
    assert client.capabilities == {"tools": {}}
    assert server.methods() == [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/list",
        "count",
    ]


async def test_many_requests_meeting_an_expired_session_initialise_it_again_once() -> None:
    server = Server()
    client = Loopback(server)
    await client.start()
    try:
        await client.list_tools()
        server.generation += 1
        results = await asyncio.gather(*(client.list_tools() for _ in range(10)))
    finally:
        await client.close()
    assert all([tool.name for tool in tools] == ["first", "second"] for tools in results)
    assert server.methods().count("initialize") == 2


async def test_shared_stream_progress_is_asked_under_our_token_shown_under_the_callers() -> None:
    server = Server()
    client = SharedLoopback(server)
    recorders = [Recorder(), Recorder()]
    await client.start()
    try:
        await asyncio.gather(
            *(
                client.request(
                    "count", {"steps": steps, "_meta": {"progressToken": "same"}}, 5, rec
                )
                for steps, rec in zip((2, 3), recorders, strict=True)
            )
        )
    finally:
        await client.close()
    for recorder, steps in zip(recorders, (2, 3), strict=True):
        progress = recorder.of("notifications/progress")
        assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
            ("same", step, steps) for step in range(1, steps + 1)
        ]
    sent = [
        m["params"]["_meta"]["progressToken"] for m in server.received if m.get("method") == "count"
    ]
    assert len(set(sent)) == 2 and "same" not in sent


@pytest.mark.parametrize("transport", [Loopback, SharedLoopback])
async def test_a_request_that_times_out_is_cancelled_upstream_by_its_id(
    transport: type[Loopback],
) -> None:
    server = Server()
    client = transport(server)
    await client.start()
    try:
        with pytest.raises(BackendError, match=r"^upstream 'loop' did not answer within 0\.2s"):
            await client.request("wait", {}, 0.2)
    finally:
        await client.close()
    wait = next(message for message in server.received if message.get("method") == "wait")
    assert server.received[-1] == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": wait["id"], "reason": "timed out after 0.2s"},
    }
