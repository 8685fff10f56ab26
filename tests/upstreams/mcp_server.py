"""A small MCP server written with aiohttp, used as a real upstream in tests.

Run as `python -m tests.upstreams.mcp_server --port N` from the repository root, or as
`python tests/upstreams/mcp_server.py --port N`.

By default it speaks Streamable HTTP: POST /mcp for messages, GET /mcp for a session's own
event stream of server notifications (with event ids, replayed after `Last-Event-ID`) and
DELETE /mcp to end a session. With `--legacy-sse` it speaks the 2024-11-05 HTTP+SSE
transport instead: GET /sse opens a session's stream (an `endpoint` event first, then every
message), and POST /messages?session_id=... takes the client's messages. Both serve the same
tools, resources (with a template and subscriptions), prompts, completion and logging.

Admin endpoints for tests:
  GET  /admin/stats                   counters and gauges of this process
  POST /admin/expire-sessions         forget every session (their streams end, unless
                                      ?keep_streams=1)
  POST /admin/drop-streams            end every server-to-client stream, keeping sessions
                                      (legacy sessions end with their stream)
  POST /admin/list-changed?kind=K     send notifications/K/list_changed (tools, resources,
                                      prompts) to every session that listens
  POST /admin/update-resource?uri=U   send notifications/resources/updated to subscribers
  POST /admin/add-tool?name=N         add a trivial tool at run time
  POST /admin/add-prompt?name=N       add a prompt without arguments at run time
  POST /admin/add-resource?uri=U      add a text resource at run time
  POST /admin/ask?method=M            send request M (params: the JSON body, if any) to every
                                      session that listens, on its own stream and related to
                                      no request; answers {"answers": [reply, ...]}

With `--asking-tools` it also serves tools that ask the client while they run, and return
what it answered (the result as structuredContent and JSON text; an error result if the
client lacks the capability or answered with an error): `sample` (sampling/createMessage),
`elicit` (elicitation/create, with an enum field and defaults) and `roots` (roots/list).
On Streamable HTTP the request goes out on the call's own reply stream; the 2024-11-05
transport has only one stream, so there the request names its call in
`params._meta.relatedRequestId`.

With `--counter` it also serves `counter`, whose count belongs to the session: each call
answers one more than the session's last (as text and as `{"count": n}`), so clients that
share a session see one count and clients that do not see their own.

With `--every-field` every tool, resource, template and prompt it lists carries every field
the 2025-11-25 schema gives it (title, icons, `_meta`, annotations, and the rest), prompt
arguments their titles, and every tool `execution`, and fields no schema gives it (an
extension, a field of a revision to come), so that a test can see each arrive.

It is stricter than the specification asks, so that a lax client fails here: a Streamable
HTTP request must accept both JSON and SSE, and every request after `initialize` at protocol
2025-06-18 or later must carry the negotiated `MCP-Protocol-Version`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

JSON = dict[str, Any]
SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
LEGACY_VERSION = SUPPORTED_VERSIONS[0]
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
SERVER_NAME = "own-upstream"
# How often an idle event stream checks whether its client has gone.
STREAM_POLL_SECONDS = 0.2
HISTORY_LIMIT = 1000

INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
RESOURCE_NOT_FOUND = -32002


@dataclass
class Options:
    port: int
    page_size: int = 2
    sse: bool = False
    legacy_sse: bool = False
    listen: bool = True
    tools_only: bool = False
    require_headers: dict[str, str] = field(default_factory=dict)
    session_ttl: float | None = None
    extra_tools: int = 0
    asking_tools: bool = False
    counter: bool = False
    every_field: bool = False


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _sse(message: JSON, event_id: int | None = None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"


def _notification(method: str, params: JSON) -> JSON:
    return {"jsonrpc": "2.0", "method": method, "params": params}


@dataclass(eq=False)
class Session:
    """One client session; `stream` is its open server-to-client event stream, if any."""

    legacy: bool = False
    protocol_version: str = ""
    last_seen: float = field(default_factory=time.monotonic)
    log_level: str = "debug"
    subscriptions: set[str] = field(default_factory=set)
    in_flight: dict[bytes, asyncio.Task[JSON]] = field(default_factory=dict)
    client_capabilities: JSON = field(default_factory=dict)
    asked: dict[bytes, asyncio.Future[JSON]] = field(default_factory=dict)
    """Our requests to the client, by id, waiting for its response."""
    stream: asyncio.Queue[bytes | None] | None = None
    listening: bool = False
    """True once the client has opened its GET stream: notifications are kept for it."""
    history: list[tuple[int, JSON]] = field(default_factory=list)
    last_event_id: int = 0
    count: int = 0
    """What the `counter` tool last answered in this session."""

    def next_event_id(self) -> int:
        self.last_event_id += 1
        return self.last_event_id

    def send(self, message: JSON) -> None:
        """Send on the server-to-client stream; Streamable HTTP keeps it for a resume."""
        if self.legacy:
            if self.stream is not None:
                self.stream.put_nowait(_sse(message))
            return
        event_id = self.next_event_id()
        self.history.append((event_id, message))
        del self.history[:-HISTORY_LIMIT]
        if self.stream is not None:
            self.stream.put_nowait(_sse(message, event_id))

    def end_stream(self) -> bool:
        if self.stream is None:
            return False
        self.stream.put_nowait(None)
        self.stream = None
        return True


Emit = Callable[[JSON], Awaitable[None]]


async def _discard(message: JSON) -> None:
    return None


@dataclass(eq=False)
class Call:
    """One request being served: where it came from and how to send notifications about it."""

    session: Session
    request_id: Any
    params: JSON
    emit: Emit = _discard

    @property
    def progress_token(self) -> Any:
        meta = self.params.get("_meta")
        return meta.get("progressToken") if isinstance(meta, dict) else None


# --- tools ---------------------------------------------------------------------------------


def _object(properties: JSON, required: list[str] | None = None) -> JSON:
    schema: JSON = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


BASE_TOOLS: list[JSON] = [
    {
        "name": "echo",
        "title": "Echo",
        "description": "Return the text it is given.",
        "inputSchema": _object({"text": {"type": "string"}}, ["text"]),
        "outputSchema": _object({"text": {"type": "string"}}, ["text"]),
        "annotations": {"readOnlyHint": True, "idempotentHint": True},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": _object({"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]),
        "outputSchema": _object({"sum": {"type": "number"}}, ["sum"]),
    },
    {
        "name": "sleep",
        "description": "Wait for some seconds, then answer; stops early when cancelled.",
        "inputSchema": _object({"seconds": {"type": "number", "minimum": 0}}, ["seconds"]),
    },
    {
        "name": "fail",
        "description": "Always fails, as a tool (isError), not as a protocol error.",
        "inputSchema": _object({}),
    },
    {
        "name": "big",
        "description": "Return n bytes of text.",
        "inputSchema": _object({"n": {"type": "integer", "minimum": 0}}, ["n"]),
    },
    {
        "name": "progress",
        "description": "Take `steps` steps of `delay` seconds, reporting progress after each.",
        "inputSchema": _object(
            {"steps": {"type": "integer", "minimum": 0}, "delay": {"type": "number", "minimum": 0}},
            ["steps"],
        ),
    },
    {
        "name": "log",
        "description": "Send a log message at a level (if the session's level lets it through).",
        "inputSchema": _object(
            {"level": {"type": "string", "enum": list(LOG_LEVELS)}, "message": {"type": "string"}},
            ["level", "message"],
        ),
    },
]


def text_result(text: str, structured: JSON | None = None, is_error: bool = False) -> JSON:
    result: JSON = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def _number(arguments: JSON, name: str, default: float | None = None) -> float:
    value = arguments.get(name, default)
    # bool is an int in Python but not a number in JSON Schema.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"argument {name!r} must be a number")
    return value


def _duration(arguments: JSON, name: str, default: float | None = None) -> float:
    value = _number(arguments, name, default)
    if value < 0:
        raise ValueError(f"argument {name!r} must not be negative")
    return value


def _count(arguments: JSON, name: str) -> int:
    value = arguments.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"argument {name!r} must be a non-negative integer")
    return value


async def call_echo(arguments: JSON, call: Call) -> JSON:
    text = arguments.get("text")
    if not isinstance(text, str):
        raise ValueError("argument 'text' must be a string")
    return text_result(text, {"text": text})


async def call_add(arguments: JSON, call: Call) -> JSON:
    total = _number(arguments, "a") + _number(arguments, "b")
    return text_result(str(total), {"sum": total})


async def call_sleep(arguments: JSON, call: Call) -> JSON:
    # A `notifications/cancelled` for this request cancels the task running this.
    seconds = _duration(arguments, "seconds")
    await asyncio.sleep(seconds)
    return text_result(f"slept {seconds:g}s")


async def call_fail(arguments: JSON, call: Call) -> JSON:
    return text_result("this tool always fails", is_error=True)


async def call_big(arguments: JSON, call: Call) -> JSON:
    return text_result("x" * _count(arguments, "n"))


async def call_progress(arguments: JSON, call: Call) -> JSON:
    steps = _count(arguments, "steps")
    delay = _duration(arguments, "delay", 0.0)
    token = call.progress_token
    for step in range(1, steps + 1):
        await asyncio.sleep(delay)
        if token is not None:
            params = {"progressToken": token, "progress": step, "total": steps}
            await call.emit(
                _notification("notifications/progress", {**params, "message": f"step {step}"})
            )
    return text_result(f"{steps} steps done", {"steps": steps})


async def call_log(arguments: JSON, call: Call) -> JSON:
    level, message = arguments.get("level"), arguments.get("message")
    if level not in LOG_LEVELS or not isinstance(message, str):
        raise ValueError("arguments 'level' (a log level) and 'message' (a string) are required")
    if LOG_LEVELS.index(level) < LOG_LEVELS.index(call.session.log_level):
        return text_result(f"filtered {level}")
    params = {"level": level, "logger": SERVER_NAME, "data": message}
    await call.emit(_notification("notifications/message", params))
    return text_result(f"logged {level}")


async def ask_client(session: Session, send: Emit, method: str, params: JSON) -> JSON:
    """Send `method` to the client and return its whole JSON-RPC response."""
    request_id = f"ask-{uuid.uuid4().hex[:12]}"
    future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
    session.asked[_key(request_id)] = future
    try:
        await send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return await future
    finally:
        del session.asked[_key(request_id)]


# The client capability each of our requests needs.
NEEDS = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


async def _ask_about(call: Call, method: str, params: JSON) -> JSON:
    """Ask the client in relation to `call`; the tool's result is what it answered."""
    capability = NEEDS[method]
    if capability not in call.session.client_capabilities:
        return text_result(f"the client did not declare the {capability} capability", is_error=True)
    if call.session.legacy:
        # One stream carries everything on this transport: name the call the request is about.
        params = {**params, "_meta": {"relatedRequestId": call.request_id}}
    reply = await ask_client(call.session, call.emit, method, params)
    error = reply.get("error")
    if isinstance(error, dict):
        code, why = error.get("code"), error.get("message")
        text = f"the client answered {method} with error {code}: {why}"
        return text_result(text, {"error": error}, is_error=True)
    result = reply.get("result")
    if not isinstance(result, dict):
        return text_result(f"the client sent no result object for {method}", is_error=True)
    return text_result(orjson.dumps(result).decode(), result)


ELICIT_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "colour": {
            "type": "string",
            "title": "Colour",
            "enum": ["red", "green", "blue"],
            "default": "green",
        },
        "count": {"type": "integer", "title": "How many", "minimum": 1, "default": 3},
    },
    "required": ["colour"],
}


async def call_sample(arguments: JSON, call: Call) -> JSON:
    prompt = arguments.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("argument 'prompt' must be a string")
    message = {"role": "user", "content": {"type": "text", "text": prompt}}
    params = {"messages": [message], "maxTokens": 100}
    return await _ask_about(call, "sampling/createMessage", params)


async def call_elicit(arguments: JSON, call: Call) -> JSON:
    message = arguments.get("message", "Pick a colour.")
    if not isinstance(message, str):
        raise ValueError("argument 'message' must be a string")
    params = {"message": message, "requestedSchema": ELICIT_SCHEMA}
    return await _ask_about(call, "elicitation/create", params)


async def call_roots(arguments: JSON, call: Call) -> JSON:
    return await _ask_about(call, "roots/list", {})


ASKING_TOOLS: list[JSON] = [
    {
        "name": "sample",
        "description": "Ask the client to sample a message for `prompt`; return its answer.",
        "inputSchema": _object({"prompt": {"type": "string"}}, ["prompt"]),
    },
    {
        "name": "elicit",
        "description": "Ask the client for a colour and a count (form elicitation).",
        "inputSchema": _object({"message": {"type": "string"}}),
    },
    {
        "name": "roots",
        "description": "Ask the client for its roots; return them.",
        "inputSchema": _object({}),
    },
]


ToolHandler = Callable[[JSON, Call], Awaitable[JSON]]
BASE_HANDLERS: dict[str, ToolHandler] = {
    "echo": call_echo,
    "add": call_add,
    "sleep": call_sleep,
    "fail": call_fail,
    "big": call_big,
    "progress": call_progress,
    "log": call_log,
}


async def call_counter(arguments: JSON, call: Call) -> JSON:
    call.session.count += 1
    return text_result(str(call.session.count), {"count": call.session.count})


COUNTER_TOOL: JSON = {
    "name": "counter",
    "description": "Count the calls of this session: answer one more than the last.",
    "inputSchema": _object({}),
    "outputSchema": _object({"count": {"type": "integer"}}, ["count"]),
}
ASKING_HANDLERS: dict[str, ToolHandler] = {
    "sample": call_sample,
    "elicit": call_elicit,
    "roots": call_roots,
}


def _trivial(name: str) -> ToolHandler:
    async def handler(arguments: JSON, call: Call) -> JSON:
        return text_result(name)

    return handler


def _trivial_tool(name: str, description: str) -> JSON:
    return {"name": name, "description": description, "inputSchema": _object({})}


# --- resources, prompts, completion --------------------------------------------------------

BLOB = bytes(range(16))
RESOURCES: list[JSON] = [
    {
        "uri": "memo://one",
        "name": "one",
        "title": "Memo one",
        "description": "The first memo.",
        "mimeType": "text/plain",
    },
    {
        "uri": "memo://two",
        "name": "two",
        "description": "The second memo.",
        "mimeType": "text/markdown",
    },
    {
        "uri": "memo://blob",
        "name": "blob",
        "description": "Sixteen bytes.",
        "mimeType": "application/octet-stream",
        "size": len(BLOB),
        "annotations": {"audience": ["user"], "priority": 0.5},
    },
]
RESOURCE_CONTENTS: dict[str, JSON] = {
    "memo://one": {"mimeType": "text/plain", "text": "The first memo says hello."},
    "memo://two": {"mimeType": "text/markdown", "text": "# Memo two\n\nSecond things second."},
    "memo://blob": {
        "mimeType": "application/octet-stream",
        "blob": base64.b64encode(BLOB).decode(),
    },
}
TEMPLATES: list[JSON] = [
    {
        "uriTemplate": "memo://items/{id}",
        "name": "item",
        "title": "Item",
        "description": "One item, by id.",
        "mimeType": "text/plain",
    }
]
ITEM_URI = re.compile(r"memo://items/([^/?#]+)")
ITEM_IDS = ("1", "2", "3", "10", "11")

PROMPTS: list[JSON] = [
    {
        "name": "greeting",
        "title": "Greeting",
        "description": "Greet someone by name.",
        "arguments": [{"name": "name", "description": "Who to greet.", "required": True}],
    },
    {
        "name": "summary",
        "description": "Summarise the memos.",
        "arguments": [{"name": "style", "description": "How to summarise.", "required": False}],
    },
]
NAMES = ("Ada", "Alan", "Alonzo", "Barbara", "Grace", "Linus")


PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
ANNOTATED: JSON = {
    "audience": ["user", "assistant"],
    "priority": 0.75,
    "lastModified": "2025-01-12T15:00:58Z",
}


def unknown_fields(key: str) -> JSON:
    """Top-level fields no MCP schema gives an entry, as servers add them: a vendor's
    extension object, a field of a later revision, and a null."""
    return {
        "x-vendor": {"tests.example/entry": key, "list": [1, "two", None], "on": True},
        "futureField": f"Later field of {key}",
        "x-null": None,
    }


def with_every_field(entry: JSON) -> JSON:
    """`entry` with every field the 2025-11-25 schema gives its kind that it lacks, each
    with a value of its own: title, icons (one by URL, one a `data:` image), `_meta`, and
    by kind annotations, an output schema and `execution` (tools), a size (resources) and
    argument titles (prompts); and the `unknown_fields`."""
    key = str(entry.get("uriTemplate") or entry.get("uri") or entry["name"])
    shaped: JSON = {
        **entry,
        "title": entry.get("title") or f"Title of {key}",
        "icons": [
            {
                "src": f"https://icons.example/{entry['name']}.svg",
                "mimeType": "image/svg+xml",
                "sizes": ["any"],
                "theme": "dark",
            },
            {"src": PIXEL, "mimeType": "image/png", "sizes": ["1x1"], "theme": "light"},
        ],
        "_meta": {"tests.example/entry": key, "tests.example/nested": {"n": [1, 2.5, None]}},
        **unknown_fields(key),
    }
    if "inputSchema" in entry:
        shaped.setdefault("outputSchema", _object({"text": {"type": "string"}}))
        shaped.setdefault("annotations", {"title": f"Annotated {key}", "destructiveHint": False})
        shaped["execution"] = {"taskSupport": "optional"}
    elif "arguments" in entry:
        shaped["arguments"] = [
            {**argument, "title": f"Argument {argument['name']}"} for argument in entry["arguments"]
        ]
    else:
        shaped.setdefault("annotations", ANNOTATED)
        if "uri" in entry:
            shaped.setdefault("size", 4096 + len(key))
    return shaped


def _uri(params: JSON) -> str:
    uri = params.get("uri")
    if not isinstance(uri, str):
        raise RpcError(INVALID_PARAMS, "'uri' must be a string")
    return uri


def _read_resource(uri: str) -> JSON:
    if (contents := RESOURCE_CONTENTS.get(uri)) is not None:
        return {"contents": [{"uri": uri, **contents}]}
    if (match := ITEM_URI.fullmatch(uri)) is not None:
        text = f"Item {match.group(1)} is here."
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}
    raise RpcError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}")


def _get_prompt(params: JSON) -> JSON:
    name = params.get("name")
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "'arguments' must be an object")
    if name == "greeting":
        who = arguments.get("name")
        if not isinstance(who, str) or not who:
            raise RpcError(INVALID_PARAMS, "Missing required argument: name")
        text = f"Please greet {who} warmly."
        return {
            "description": "A greeting.",
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
        }
    if name == "summary":
        style = arguments.get("style") or "brief"
        memo = {"uri": "memo://one", **RESOURCE_CONTENTS["memo://one"]}
        return {
            "description": "A summary request.",
            "messages": [
                {
                    "role": "user",
                    "content": {"type": "text", "text": f"Summarise in a {style} style:"},
                },
                {"role": "user", "content": {"type": "resource", "resource": memo}},
            ],
        }
    raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}")


def _complete(params: JSON) -> JSON:
    ref, argument = params.get("ref"), params.get("argument")
    if not isinstance(ref, dict) or not isinstance(argument, dict):
        raise RpcError(INVALID_PARAMS, "'ref' and 'argument' are required")
    value = str(argument.get("value") or "").lower()
    choices: tuple[str, ...] = ()
    if ref.get("type") == "ref/prompt" and ref.get("name") == "greeting":
        choices = NAMES if argument.get("name") == "name" else ()
    elif ref.get("type") == "ref/resource" and ref.get("uri") == TEMPLATES[0]["uriTemplate"]:
        choices = ITEM_IDS if argument.get("name") == "id" else ()
    values = [choice for choice in choices if choice.lower().startswith(value)]
    return {"completion": {"values": values, "total": len(values), "hasMore": False}}


def _page(items: list[JSON], cursor: Any, key: str, page_size: int) -> JSON:
    try:
        start = int(cursor) if cursor is not None else 0
    except (TypeError, ValueError):
        raise RpcError(INVALID_PARAMS, f"Invalid cursor: {cursor!r}") from None
    end = start + page_size
    result: JSON = {key: items[start:end]}
    if end < len(items):
        result["nextCursor"] = str(end)
    return result


def _key(request_id: Any) -> bytes:
    return orjson.dumps(request_id)


# --- the server ----------------------------------------------------------------------------


class McpTestServer:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.tools = list(BASE_TOOLS)
        self.handlers = dict(BASE_HANDLERS)
        if options.asking_tools:
            self.tools += ASKING_TOOLS
            self.handlers |= ASKING_HANDLERS
        if options.counter:
            self.tools.append(COUNTER_TOOL)
            self.handlers["counter"] = call_counter
        for i in range(options.extra_tools):
            name = f"t{i}"
            self.tools.append(_trivial_tool(name, f"Trivial tool {i}."))
            self.handlers[name] = _trivial(name)
        self.sessions: dict[str, Session] = {}
        self.peers: set[object] = set()
        self.background: set[asyncio.Task[None]] = set()
        self.last_event_id_seen: str | None = None
        self.last_client_capabilities: JSON | None = None
        """What the client declared in the latest `initialize`."""
        self.stats: dict[str, int] = {
            "initialize": 0,
            "initialized_notifications": 0,
            "tools_list": 0,
            "tools_call": 0,
            "resources_list": 0,
            "resources_templates_list": 0,
            "resources_read": 0,
            "prompts_list": 0,
            "prompts_get": 0,
            "completions": 0,
            "set_level": 0,
            "subscribe": 0,
            "unsubscribe": 0,
            "cancel_notifications": 0,
            "cancelled": 0,
            "requests": 0,
            "get_streams": 0,
            "resumed_streams": 0,
            "sse_connections": 0,
            "sessions_deleted": 0,
            "unknown_session_deletes": 0,
            "sessions_expired": 0,
            "client_answers": 0,
            "stray_answers": 0,
        }

    def listed(self, entries: list[JSON]) -> list[JSON]:
        return [with_every_field(e) for e in entries] if self.options.every_field else entries

    def capabilities(self) -> JSON:
        capabilities: JSON = {"tools": {"listChanged": True}}
        if not self.options.tools_only:
            capabilities |= {
                "resources": {"subscribe": True, "listChanged": True},
                "prompts": {"listChanged": True},
                "completions": {},
                "logging": {},
            }
        return capabilities

    def app(self) -> web.Application:
        app = web.Application()
        if self.options.legacy_sse:
            app.router.add_get("/sse", self.legacy_stream)
            app.router.add_post("/messages", self.legacy_post)
        else:
            app.router.add_post("/mcp", self.post)
            app.router.add_get("/mcp", self.listen)
            app.router.add_delete("/mcp", self.delete)
        app.router.add_post("/admin/expire-sessions", self.expire_sessions)
        app.router.add_post("/admin/drop-streams", self.drop_streams)
        app.router.add_post("/admin/list-changed", self.list_changed)
        app.router.add_post("/admin/update-resource", self.update_resource)
        app.router.add_post("/admin/add-tool", self.add_tool)
        app.router.add_post("/admin/add-prompt", self.add_prompt)
        app.router.add_post("/admin/add-resource", self.add_resource)
        app.router.add_post("/admin/ask", self.ask)
        app.router.add_get("/admin/stats", self.get_stats)
        app.on_shutdown.append(self._end_streams)
        return app

    async def _end_streams(self, app: web.Application) -> None:
        for session in self.sessions.values():
            session.end_stream()

    # --- admin ---

    async def expire_sessions(self, request: web.Request) -> web.Response:
        count = len(self.sessions)
        # keep_streams=1 leaves their streams open, as a server that lost its state might.
        if request.query.get("keep_streams") != "1":
            for session in self.sessions.values():
                session.end_stream()
        self.sessions.clear()
        self.stats["sessions_expired"] += count
        return _json({"expired": count})

    async def drop_streams(self, request: web.Request) -> web.Response:
        dropped = sum(session.end_stream() for session in self.sessions.values())
        return _json({"dropped": dropped})

    async def list_changed(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind", "")
        if kind not in ("tools", "resources", "prompts"):
            return _json({"error": "kind must be tools, resources or prompts"}, status=400)
        message = _notification(f"notifications/{kind}/list_changed", {})
        return _json({"notified": self._broadcast(message, lambda session: True)})

    async def update_resource(self, request: web.Request) -> web.Response:
        uri = request.query.get("uri", "")
        message = _notification("notifications/resources/updated", {"uri": uri})
        return _json({"notified": self._broadcast(message, lambda s: uri in s.subscriptions)})

    def _broadcast(self, message: JSON, to: Callable[[Session], bool]) -> int:
        listeners = [s for s in self.sessions.values() if (s.legacy or s.listening) and to(s)]
        for session in listeners:
            session.send(message)
        return len(listeners)

    async def add_tool(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name or name in self.handlers:
            return _json({"error": f"tool name {name!r} is empty or taken"}, status=400)
        self.tools.append(_trivial_tool(name, "Added at run time."))
        self.handlers[name] = _trivial(name)
        return _json({"tools": len(self.tools)})

    async def add_prompt(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name or any(prompt["name"] == name for prompt in PROMPTS):
            return _json({"error": f"prompt name {name!r} is empty or taken"}, status=400)
        PROMPTS.append({"name": name, "description": "Added at run time.", "arguments": []})
        return _json({"prompts": len(PROMPTS)})

    async def add_resource(self, request: web.Request) -> web.Response:
        uri = request.query.get("uri", "")
        if not uri or any(resource["uri"] == uri for resource in RESOURCES):
            return _json({"error": f"resource {uri!r} is empty or taken"}, status=400)
        RESOURCES.append({"uri": uri, "name": uri, "mimeType": "text/plain"})
        return _json({"resources": len(RESOURCES)})

    async def ask(self, request: web.Request) -> web.Response:
        method = request.query.get("method", "")
        params = orjson.loads(await request.read() or b"{}")
        listeners = [s for s in self.sessions.values() if s.legacy or s.listening]

        async def one(session: Session) -> JSON | None:
            async def send(message: JSON) -> None:
                session.send(message)

            try:
                async with asyncio.timeout(10):
                    return await ask_client(session, send, method, params)
            except TimeoutError:
                return None

        return _json({"answers": await asyncio.gather(*map(one, listeners))})

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(
            {
                **self.stats,
                "client_capabilities": self.last_client_capabilities,
                "pending_asks": sum(len(s.asked) for s in self.sessions.values()),
                "sessions": len(self.sessions),
                "connections": len(self.peers),
                "open_streams": sum(s.stream is not None for s in self.sessions.values()),
                "last_event_id": self.last_event_id_seen,
            }
        )

    # --- Streamable HTTP ---

    async def delete(self, request: web.Request) -> web.Response:
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        session = self.sessions.pop(request.headers.get(SESSION_HEADER, ""), None)
        if session is None:
            self.stats["unknown_session_deletes"] += 1
            return _rpc_error_response(404, None, -32001, "Session not found")
        session.end_stream()
        self.stats["sessions_deleted"] += 1
        return web.Response(status=204)

    async def post(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        message = await _read_message(request)
        if isinstance(message, web.Response):
            return message
        method = message.get("method")
        if method == "initialize" and "id" in message:
            session_id = uuid.uuid4().hex
            session = self.sessions[session_id] = Session()
            call = Call(session, message["id"], message.get("params") or {})
            return await self._answer(request, call, method, {SESSION_HEADER: session_id})
        found = self._session_for(request)
        if isinstance(found, web.Response):
            return found
        if not isinstance(method, str) or "id" not in message:
            # A notification or a response to us: accepted, nothing to answer.
            self._on_notification(found, message)
            return web.Response(status=202)
        params = message.get("params") or {}
        return await self._answer(request, Call(found, message["id"], params), method)

    async def listen(self, request: web.Request) -> web.StreamResponse:
        """The session's own stream for server notifications (GET /mcp)."""
        self.stats["get_streams"] += 1
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        if not self.options.listen:
            return web.Response(status=405, headers={"Allow": "POST, DELETE"})
        if "text/event-stream" not in request.headers.get("Accept", ""):
            return _rpc_error_response(406, None, -32600, "Not Acceptable: text/event-stream")
        session = self._session_for(request)
        if isinstance(session, web.Response):
            return session
        last = request.headers.get("Last-Event-ID")
        if last is not None:
            self.stats["resumed_streams"] += 1
            self.last_event_id_seen = last
        # A newer stream replaces an older one the client may have given up on.
        session.end_stream()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        session.stream, session.listening = queue, True
        after = int(last) if last is not None and last.isdigit() else None
        backlog = [] if after is None else [(i, m) for i, m in session.history if i > after]
        response = _event_stream()
        await response.prepare(request)
        try:
            for event_id, message in backlog:
                await response.write(_sse(message, event_id))
            await _pump(request, response, queue)
        except ConnectionResetError:
            pass
        finally:
            if session.stream is queue:
                session.stream = None
        return response

    def _refuse_headers(self, request: web.Request) -> web.Response | None:
        for name, value in self.options.require_headers.items():
            if request.headers.get(name) != value:
                return _rpc_error_response(401, None, -32001, f"Unauthorized: {name} required")
        if request.method != "POST" or self.options.legacy_sse:
            return None
        accept = request.headers.get("Accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            return _rpc_error_response(
                406, None, -32600, "Not Acceptable: accept application/json and text/event-stream"
            )
        if request.content_type != "application/json":
            return _rpc_error_response(415, None, -32600, "Content-Type must be application/json")
        return None

    def _session_for(self, request: web.Request) -> Session | web.Response:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return _rpc_error_response(400, None, -32600, "Bad Request: no session id")
        session = self.sessions.get(session_id)
        now = time.monotonic()
        ttl = self.options.session_ttl
        if session is not None and ttl is not None and now - session.last_seen > ttl:
            del self.sessions[session_id]
            session.end_stream()
            self.stats["sessions_expired"] += 1
            session = None
        if session is None:
            return _rpc_error_response(404, None, -32001, "Session not found")
        session.last_seen = now
        if session.protocol_version >= "2025-06-18":
            sent = request.headers.get(VERSION_HEADER)
            if sent != session.protocol_version:
                return _rpc_error_response(
                    400, None, -32600, f"Bad Request: {VERSION_HEADER} {sent!r} is not negotiated"
                )
        return session

    def _streams(self, method: str, call: Call) -> bool:
        """Whether to answer with an event stream: always in --sse mode, and for tool calls
        that send notifications about themselves."""
        if self.options.sse:
            return True
        if method != "tools/call":
            return False
        name = call.params.get("name")
        if name in ASKING_HANDLERS:
            return True  # the request to the client goes out on this stream
        return name == "log" or (name == "progress" and call.progress_token is not None)

    async def _answer(
        self,
        request: web.Request,
        call: Call,
        method: str,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        if not self._streams(method, call):
            reply = await self._run(call, method)
            if reply is None:
                reply = _error_reply(call.request_id, -32800, "Request cancelled")
            return _json(reply, headers=headers)
        response = _event_stream(headers)
        await response.prepare(request)

        async def emit(message: JSON) -> None:
            await response.write(_sse(message, call.session.next_event_id()))

        call.emit = emit
        if self.options.sse:
            # A comment and a notification before the response, as real servers send, so
            # the client has to skip them.
            await response.write(b": stream opened\n\n")
            await emit(_notification("notifications/message", {"level": "info", "data": "working"}))
        reply = await self._run(call, method)
        if reply is not None:
            # The response's JSON spans several data lines.
            lines = orjson.dumps(reply, option=orjson.OPT_INDENT_2).split(b"\n")
            data = b"".join(b"data: " + line + b"\n" for line in lines)
            event_id = call.session.next_event_id()
            await response.write(b"event: message\nid: %d\n" % event_id + data + b"\n")
        await response.write_eof()
        return response

    # --- the 2024-11-05 HTTP+SSE transport ---

    async def legacy_stream(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        session_id = uuid.uuid4().hex
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        session = self.sessions[session_id] = Session(legacy=True, stream=queue)
        self.stats["sse_connections"] += 1
        response = _event_stream()
        await response.prepare(request)
        try:
            endpoint = f"/messages?session_id={session_id}"
            await response.write(f"event: endpoint\ndata: {endpoint}\n\n".encode())
            await _pump(request, response, queue)
        except ConnectionResetError:
            pass
        finally:
            # The session lives as long as its stream.
            if self.sessions.get(session_id) is session:
                del self.sessions[session_id]
            session.stream = None
            for task in session.in_flight.values():
                task.cancel()
        return response

    async def legacy_post(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        if request.content_type != "application/json":
            return _rpc_error_response(415, None, -32600, "Content-Type must be application/json")
        session = self.sessions.get(request.query.get("session_id", ""))
        if session is None or session.stream is None:
            return web.Response(status=404, text="Could not find session")
        message = await _read_message(request)
        if isinstance(message, web.Response):
            return message
        method = message.get("method")
        if not isinstance(method, str) or "id" not in message:
            self._on_notification(session, message)
        else:
            call = Call(session, message["id"], message.get("params") or {})
            self._spawn(self._legacy_answer(call, method))
        return web.Response(status=202, text="Accepted")

    async def _legacy_answer(self, call: Call, method: str) -> None:
        session = call.session

        async def emit(message: JSON) -> None:
            session.send(message)

        call.emit = emit
        reply = await self._run(call, method)
        if reply is not None:
            session.send(reply)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # --- serving requests, either transport ---

    def _on_notification(self, session: Session, message: JSON) -> None:
        method = message.get("method")
        if method is None and "id" in message:
            self._on_response(session, message)
        elif method == "notifications/initialized":
            self.stats["initialized_notifications"] += 1
        elif method == "notifications/cancelled":
            self.stats["cancel_notifications"] += 1
            params = message.get("params") or {}
            task = session.in_flight.get(_key(params.get("requestId")))
            if task is not None and not task.done():
                task.cancel()
                self.stats["cancelled"] += 1

    def _on_response(self, session: Session, message: JSON) -> None:
        future = session.asked.get(_key(message["id"]))
        if future is None or future.done():
            self.stats["stray_answers"] += 1
            return
        self.stats["client_answers"] += 1
        future.set_result(message)

    async def _run(self, call: Call, method: str) -> JSON | None:
        """The JSON-RPC reply to a request, or None when the client cancelled it."""
        key = _key(call.request_id)
        task = asyncio.ensure_future(self._dispatch(method, call))
        call.session.in_flight[key] = task
        try:
            return {"jsonrpc": "2.0", "id": call.request_id, "result": await task}
        except RpcError as exc:
            return _error_reply(call.request_id, exc.code, exc.message)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # The task alone was cancelled, by the client's notifications/cancelled: the
            # specification says to send no response then.
            return None
        finally:
            if call.session.in_flight.get(key) is task:
                del call.session.in_flight[key]

    async def _dispatch(self, method: str, call: Call) -> JSON:
        params = call.params
        if method == "initialize":
            return self._initialize(call)
        if method == "ping":
            return {}
        if method == "tools/list":
            self.stats["tools_list"] += 1
            tools = self.listed(self.tools)
            return _page(tools, params.get("cursor"), "tools", self.options.page_size)
        if method == "tools/call":
            self.stats["tools_call"] += 1
            return await self._call_tool(call)
        if self.options.tools_only:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return self._other(method, call)

    def _initialize(self, call: Call) -> JSON:
        self.stats["initialize"] += 1
        asked = call.params.get("protocolVersion")
        latest = LEGACY_VERSION if call.session.legacy else LATEST_VERSION
        version = asked if asked in SUPPORTED_VERSIONS else latest
        call.session.protocol_version = version
        capabilities = call.params.get("capabilities")
        call.session.client_capabilities = capabilities if isinstance(capabilities, dict) else {}
        self.last_client_capabilities = call.session.client_capabilities
        return {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": {"name": SERVER_NAME, "version": "1.0.0"},
        }

    def _other(self, method: str, call: Call) -> JSON:
        params, size = call.params, self.options.page_size
        if method == "resources/list":
            self.stats["resources_list"] += 1
            return _page(self.listed(RESOURCES), params.get("cursor"), "resources", size)
        if method == "resources/templates/list":
            self.stats["resources_templates_list"] += 1
            return _page(self.listed(TEMPLATES), params.get("cursor"), "resourceTemplates", size)
        if method == "resources/read":
            self.stats["resources_read"] += 1
            return _read_resource(_uri(params))
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = _uri(params)
            _read_resource(uri)
            if method == "resources/subscribe":
                self.stats["subscribe"] += 1
                call.session.subscriptions.add(uri)
            else:
                self.stats["unsubscribe"] += 1
                call.session.subscriptions.discard(uri)
            return {}
        if method == "prompts/list":
            self.stats["prompts_list"] += 1
            return _page(self.listed(PROMPTS), params.get("cursor"), "prompts", size)
        if method == "prompts/get":
            self.stats["prompts_get"] += 1
            return _get_prompt(params)
        if method == "completion/complete":
            self.stats["completions"] += 1
            return _complete(params)
        if method == "logging/setLevel":
            level = params.get("level")
            if level not in LOG_LEVELS:
                raise RpcError(INVALID_PARAMS, f"Invalid log level: {level!r}")
            self.stats["set_level"] += 1
            call.session.log_level = level
            return {}
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    async def _call_tool(self, call: Call) -> JSON:
        name = call.params.get("name")
        handler = self.handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = call.params.get("arguments") or {}
        try:
            return await handler(arguments, call)
        except ValueError as exc:
            # Bad arguments are a tool execution error the model can read and correct.
            return text_result(str(exc), is_error=True)


async def _read_message(request: web.Request) -> JSON | web.Response:
    try:
        message = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _rpc_error_response(400, None, -32700, "Parse error")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _rpc_error_response(400, None, -32600, "Invalid Request")
    return message


async def _pump(
    request: web.Request, response: web.StreamResponse, queue: asyncio.Queue[bytes | None]
) -> None:
    """Write queued events until the queue says stop or the client goes away."""
    while True:
        try:
            chunk = await asyncio.wait_for(queue.get(), STREAM_POLL_SECONDS)
        except TimeoutError:
            # aiohttp does not cancel a handler whose client left; look for it instead.
            if request.transport is None or request.transport.is_closing():
                return
            continue
        if chunk is None:
            await response.write_eof()
            return
        await response.write(chunk)


def _event_stream(headers: dict[str, str] | None = None) -> web.StreamResponse:
    base = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    return web.StreamResponse(headers={**base, **(headers or {})})


def _error_reply(request_id: Any, code: int, message: str) -> JSON:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _rpc_error_response(status: int, request_id: Any, code: int, message: str) -> web.Response:
    return _json(_error_reply(request_id, code, message), status=status)


# --- command line --------------------------------------------------------------------------


def _header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {raw!r}")
    return name, value


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description="A small MCP test server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--page-size", type=int, default=2, help="items per list page")
    parser.add_argument("--sse", action="store_true", help="answer POSTs as SSE streams")
    parser.add_argument(
        "--legacy-sse",
        action="store_true",
        help="speak the 2024-11-05 HTTP+SSE transport (GET /sse, POST /messages)",
    )
    parser.add_argument(
        "--no-listen", action="store_true", help="answer 405 to GET /mcp (no server stream)"
    )
    parser.add_argument(
        "--tools-only",
        action="store_true",
        help="offer only tools: no resources, prompts, completion or logging",
    )
    parser.add_argument(
        "--require-header",
        type=_header,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="answer 401 unless this header is sent (repeatable)",
    )
    parser.add_argument(
        "--session-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="forget a session left unused for this long (answering 404 afterwards)",
    )
    parser.add_argument("--tools", type=int, default=0, help="add N trivial tools t0..tN-1")
    parser.add_argument(
        "--asking-tools",
        action="store_true",
        help="add the tools sample, elicit and roots, which ask the client while they run",
    )
    parser.add_argument(
        "--counter", action="store_true", help="add the tool counter, which counts per session"
    )
    parser.add_argument(
        "--every-field",
        action="store_true",
        help="list every field the schema defines on each tool, resource, template and prompt, "
        "and fields it does not define",
    )
    args = parser.parse_args(argv)
    return Options(
        port=args.port,
        page_size=max(1, args.page_size),
        sse=args.sse,
        legacy_sse=args.legacy_sse,
        listen=not args.no_listen,
        tools_only=args.tools_only,
        require_headers=dict(args.require_header),
        session_ttl=args.session_ttl,
        extra_tools=args.tools,
        asking_tools=args.asking_tools,
        counter=args.counter,
        every_field=args.every_field,
    )


async def serve(options: Options) -> None:
    # A short shutdown timeout: a test that stops the server must not wait for a `sleep`.
    runner = web.AppRunner(McpTestServer(options).app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", options.port, backlog=1024).start()
    print(f"listening on http://127.0.0.1:{options.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_options(argv)))


if __name__ == "__main__":
    main()
