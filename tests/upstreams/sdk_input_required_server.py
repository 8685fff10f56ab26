"""An upstream built with the official `mcp` SDK whose tools get what they need from the
client through resolvers: to a 2026-07-28 client they answer in the multi round-trip
style (an `input_required` result, then the retry with `inputResponses`), as a server of
that era does. The tools: `sample` (sampling for `prompt`), `elicit` (a form with an enum
field and defaults) and `roots` (the client's roots); each returns what the client gave.
`greet` asks nothing, and `note` sends a log message.
`GET /stats` counts the `tools/call` requests by whether they carried `inputResponses`.

Run as `python tests/upstreams/sdk_input_required_server.py --port N`.
"""

from __future__ import annotations

import argparse
import json
import socket
import warnings
from typing import Annotated, Any, Literal

import uvicorn
from mcp.server.mcpserver import Context, Elicit, ListRoots, MCPServer, Resolve, Sample
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
from pydantic import BaseModel, Field

# Sampling and roots are deprecated in the newest protocol; this server uses them on purpose.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server: MCPServer = MCPServer("sdk-input-required", log_level="WARNING")
STATS = {"tools_call": 0, "retries": 0}


def ask_sampling(prompt: str) -> Sample:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return Sample([message], max_tokens=100)


class Choice(BaseModel):
    colour: Literal["red", "green", "blue"] = Field(default="green", title="Colour")
    count: int = Field(default=3, ge=1, title="How many")


def ask_choice() -> Elicit[Choice]:
    return Elicit("Pick a colour.", Choice)


def ask_roots() -> ListRoots:
    return ListRoots()


@server.tool()
async def sample(
    prompt: str, sampled: Annotated[CreateMessageResult, Resolve(ask_sampling)]
) -> dict[str, Any]:
    """Ask the client to sample a message for `prompt`; return its answer."""
    return sampled.model_dump(by_alias=True, mode="json", exclude_none=True)


@server.tool()
async def elicit(choice: Annotated[Choice, Resolve(ask_choice)]) -> dict[str, Any]:
    """Ask the client for a colour and a count (form elicitation)."""
    return {"action": "accept", "content": choice.model_dump()}


@server.tool()
async def roots(listed: Annotated[ListRootsResult, Resolve(ask_roots)]) -> dict[str, Any]:
    """Ask the client for its roots; return them."""
    return listed.model_dump(by_alias=True, mode="json", exclude_none=True)


@server.tool()
def greet(name: str) -> str:
    """Say hello to someone (asks nothing)."""
    return f"Hello, {name}!"


@server.tool()
async def note(message: str, ctx: Context) -> str:
    """Log `message` at info (sent only to requests that opt in), then answer."""
    await ctx.info(message)
    return "noted"


class _Counting:
    """Counts `tools/call` requests, and those that are retries, before the SDK sees them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            body = json.dumps(STATS).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("method") == "tools/call":
            STATS["tools_call"] += 1
            if "inputResponses" in (request.get("params") or {}):
                STATS["retries"] += 1
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once its socket listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"listening on http://127.0.0.1:{self.config.port}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A 2026-07-28 upstream that asks for input.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = _Counting(server.streamable_http_app(stateless_http=True))
    _Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")).run()


if __name__ == "__main__":
    main()
