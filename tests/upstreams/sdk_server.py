"""An upstream built with the official `mcp` SDK, so the gateway is also tested against a
server it did not write: tools (one reporting progress), a resource, a resource template and
a prompt, all declared with the SDK's own decorators.

By default it serves Streamable HTTP at /mcp with stateful sessions and SSE replies; with
`--legacy-sse` it serves the 2024-11-05 HTTP+SSE transport (GET /sse, POST /messages/).

With `--asking-tools` it also serves tools that ask the client while they run, through the
SDK's own session methods, and return what it answered as structured content (a client's
JSON-RPC error makes the tool fail, so the result is an error): `sample`
(`ctx.session.create_message`; `sample_later` after a delay), `elicit` (`ctx.elicit`, a
form with an enum field and defaults), `roots` (`roots/list` sent as related to the call,
so on Streamable HTTP it rides the call's reply stream) and `roots_standalone`
(`ctx.session.list_roots()`, which the SDK sends related to no request: on the session's
GET stream).

With `--resumable` its Streamable HTTP sessions keep their events (an in-memory event store,
and a `retry` of 100 ms), and the tool `interrupted_count` ends its reply's stream after the
first step and goes on counting, as a 2025-11-25 server may (SEP-1699): a client must
resume the stream with GET and `Last-Event-ID` to see the rest and the result.

Run as `python -m tests.upstreams.sdk_server --port N` from the repository root, or as
`python tests/upstreams/sdk_server.py --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import warnings
from typing import Any, Literal

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel, Field

# Sampling and roots are deprecated in the newest protocol, not in the versions spoken here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server: MCPServer = MCPServer("sdk-upstream", log_level="WARNING")


@server.tool()
def greet(name: str) -> str:
    """Say hello to someone."""
    return f"Hello, {name}!"


@server.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Count to `steps`, reporting progress at each step."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return f"counted to {steps}"


@server.resource(
    "memo://sdk/readme", name="readme", description="A text resource.", mime_type="text/plain"
)
def readme() -> str:
    return "Served by the SDK."


@server.resource(
    "memo://sdk/items/{item_id}",
    name="sdk-item",
    description="One item, by id.",
    mime_type="text/plain",
)
def item(item_id: str) -> str:
    return f"SDK item {item_id}"


@server.prompt(title="Haiku")
def haiku(topic: str) -> str:
    """Ask for a haiku about a topic."""
    return f"Write a haiku about {topic}."


# --- tools that ask the client (--asking-tools) ---


async def sample(prompt: str, ctx: Context) -> dict[str, Any]:
    """Ask the client to sample a message for `prompt`; return its answer."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    result = await ctx.session.create_message(
        [message], max_tokens=100, related_request_id=ctx.request_id
    )
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


async def sample_later(prompt: str, delay: float, ctx: Context) -> dict[str, Any]:
    """`sample`, after `delay` seconds."""
    await asyncio.sleep(delay)
    return await sample(prompt, ctx)


class Choice(BaseModel):
    colour: Literal["red", "green", "blue"] = Field(default="green", title="Colour")
    count: int = Field(default=3, ge=1, title="How many")


async def elicit(ctx: Context, message: str = "Pick a colour.") -> dict[str, Any]:
    """Ask the client for a colour and a count (form elicitation)."""
    answer = await ctx.elicit(message, Choice)
    if answer.action == "accept":
        return {"action": "accept", "content": answer.data.model_dump()}
    return {"action": answer.action}


async def roots(ctx: Context) -> dict[str, Any]:
    """Ask the client for its roots, in relation to this call; return them."""
    result = await ctx.session.send_request(
        ListRootsRequest(),
        ListRootsResult,
        metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
    )
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


async def roots_standalone(ctx: Context) -> dict[str, Any]:
    """Ask the client for its roots as the SDK does by default: related to no request."""
    result = await ctx.session.list_roots()
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


ASKING_TOOLS = (sample, sample_later, elicit, roots, roots_standalone)


# --- resumable reply streams (--resumable) ---


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, for replaying after a client's last one."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        position = next(
            (n for n, (event_id, _, _) in enumerate(self._events) if event_id == last_event_id),
            None,
        )
        if position is None:
            return None
        stream_id = self._events[position][1]
        for event_id, stream, message in self._events[position + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


async def interrupted_count(steps: int, ctx: Context) -> str:
    """Count to `steps` with progress, ending the reply's stream after the first step."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
        if step == 1:
            await ctx.close_sse_stream()
        # Some steps fall while the client is away, some after it has resumed.
        await asyncio.sleep(0.05)
    return f"counted to {steps} across a resumed stream"


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once its socket listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"listening on http://127.0.0.1:{self.config.port}", flush=True)


def serve(
    port: int, json_response: bool, legacy_sse: bool, asking_tools: bool, resumable: bool
) -> None:
    if asking_tools:
        for tool in ASKING_TOOLS:
            server.add_tool(tool)
    if legacy_sse:
        app = server.sse_app()
    elif resumable:
        server.add_tool(interrupted_count)
        app = server.streamable_http_app(
            stateless_http=False, event_store=MemoryEventStore(), retry_interval=100
        )
    else:
        # Stateful on purpose (stateless_http=False): the client must carry the session id.
        app = server.streamable_http_app(json_response=json_response, stateless_http=False)
    _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An MCP upstream built with the official SDK.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--json", action="store_true", help="answer with JSON bodies instead of SSE streams"
    )
    parser.add_argument(
        "--legacy-sse",
        action="store_true",
        help="serve the 2024-11-05 HTTP+SSE transport (GET /sse, POST /messages/)",
    )
    parser.add_argument(
        "--asking-tools",
        action="store_true",
        help="add tools that ask the client (sampling, elicitation, roots) while they run",
    )
    parser.add_argument(
        "--resumable",
        action="store_true",
        help="keep events for resumption, and add a tool that ends its reply's stream early",
    )
    args = parser.parse_args(argv)
    serve(args.port, args.json, args.legacy_sse, args.asking_tools, args.resumable)


if __name__ == "__main__":
    main()
