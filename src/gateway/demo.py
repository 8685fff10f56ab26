"""A small MCP server to try the gateway with: `aio-mcp-gateway demo-upstream --port 9000`.

It speaks MCP Streamable HTTP at `POST /mcp`, answering every request with JSON (it keeps
no sessions and offers no server-to-client stream, which the protocol allows). It serves a
few built-in documents three ways: the `search` tool finds them, each one is a resource
(`docs://<slug>`), and the `triage` prompt asks a model to answer a question from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway import __version__

JSON = dict[str, Any]

SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002
SEARCH_LIMIT = 5


@dataclass(frozen=True)
class Doc:
    slug: str
    title: str
    text: str

    @property
    def uri(self) -> str:
        return f"docs://{self.slug}"


DOCS = {
    doc.slug: doc
    for doc in (
        Doc(
            "gateway",
            "What aio-mcp-gateway is",
            "aio-mcp-gateway puts many upstream MCP servers behind one URL and one token. "
            "Register an upstream with one POST and its tools, resources and prompts appear "
            "in the gateway's catalogue, tools and prompts named <prefix>__<name>.",
        ),
        Doc(
            "tokens",
            "Tokens and scopes",
            "Callers send a bearer token. `aio-mcp-gateway token create --sub NAME` prints "
            "one; the admin scope opens the admin API, and the servers claim limits a token "
            "to some virtual servers.",
        ),
        Doc(
            "upstreams",
            "Registering upstream servers",
            "POST /upstreams with a name, the server's URL and its transport "
            "(streamable-http or sse). Header values are stored encrypted. Refresh an "
            "upstream to discover new tools; delete it to take its tools away.",
        ),
        Doc(
            "faq",
            "Frequently asked questions",
            "Why is my tool missing? Check GET /tools: it may be disabled, or its upstream "
            "may be unreachable. Can one gateway front another? Yes: register the other "
            "gateway's /mcp as an upstream.",
        ),
    )
}

SEARCH_TOOL: JSON = {
    "name": "search",
    "title": "Search the docs",
    "description": "Find the documents whose title or text mention every word of the query.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "description": "words to look for"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": SEARCH_LIMIT},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "uri": {"type": "string"},
                        "title": {"type": "string"},
                        "snippet": {"type": "string"},
                    },
                    "required": ["uri", "title", "snippet"],
                },
            }
        },
        "required": ["results"],
    },
    "annotations": {"readOnlyHint": True, "openWorldHint": False},
}

TRIAGE_PROMPT: JSON = {
    "name": "triage",
    "title": "Triage a question",
    "description": "Ask for an answer drawn from the docs, or for what is missing from them.",
    "arguments": [{"name": "question", "description": "the user's question", "required": True}],
}


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def search(query: str, limit: int = SEARCH_LIMIT) -> list[JSON]:
    """The documents mentioning every word of `query`, most mentions first."""
    words = re.findall(r"\w+", query.lower())
    scored: list[tuple[int, Doc]] = []
    for doc in DOCS.values():
        haystack = f"{doc.title} {doc.text}".lower()
        counts = [haystack.count(word) for word in words]
        if words and all(counts):
            scored.append((sum(counts), doc))
    scored.sort(key=lambda pair: -pair[0])
    return [
        {"uri": doc.uri, "title": doc.title, "snippet": doc.text.split(". ")[0]}
        for _, doc in scored[:limit]
    ]


def _tool_error(message: str) -> JSON:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def _initialize(params: JSON) -> JSON:
    asked = params.get("protocolVersion")
    return {
        "protocolVersion": asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1],
        "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
        "serverInfo": {"name": "aio-mcp-gateway-demo", "version": __version__},
        "instructions": "Search the built-in docs with `search`; read one as docs://<slug>.",
    }


def _tools_call(params: JSON) -> JSON:
    if params.get("name") != SEARCH_TOOL["name"]:
        raise RpcError(INVALID_PARAMS, f"unknown tool: {params.get('name')!r}")
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "'arguments' must be an object")
    query = arguments.get("query")
    limit = arguments.get("limit", SEARCH_LIMIT)
    if not isinstance(query, str) or not query.strip():
        return _tool_error("'query' must be a non-empty string")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 20:
        return _tool_error("'limit' must be an integer from 1 to 20")
    structured = {"results": search(query, limit)}
    # Tools with structured output repeat it as JSON text for clients that predate it.
    text = orjson.dumps(structured).decode()
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured}


def _resources_list(params: JSON) -> JSON:
    return {
        "resources": [
            {"uri": doc.uri, "name": doc.slug, "title": doc.title, "mimeType": "text/plain"}
            for doc in DOCS.values()
        ]
    }


def _resources_read(params: JSON) -> JSON:
    uri = params.get("uri")
    doc = next((doc for doc in DOCS.values() if doc.uri == uri), None)
    if doc is None:
        raise RpcError(RESOURCE_NOT_FOUND, f"no such resource: {uri!r}")
    return {"contents": [{"uri": doc.uri, "mimeType": "text/plain", "text": doc.text}]}


def _prompts_get(params: JSON) -> JSON:
    if params.get("name") != TRIAGE_PROMPT["name"]:
        raise RpcError(INVALID_PARAMS, f"unknown prompt: {params.get('name')!r}")
    question = (params.get("arguments") or {}).get("question")
    if not isinstance(question, str) or not question.strip():
        raise RpcError(INVALID_PARAMS, "the argument 'question' is required")
    text = (
        f"A user asks: {question}\n\nAnswer from the product docs (use the search tool to find "
        "them), or say which document is missing."
    )
    return {
        "description": TRIAGE_PROMPT["description"],
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
    }


METHODS: dict[str, Callable[[JSON], JSON]] = {
    "initialize": _initialize,
    "ping": lambda params: {},
    "tools/list": lambda params: {"tools": [SEARCH_TOOL]},
    "tools/call": _tools_call,
    "resources/list": _resources_list,
    "resources/templates/list": lambda params: {"resourceTemplates": []},
    "resources/read": _resources_read,
    "prompts/list": lambda params: {"prompts": [TRIAGE_PROMPT]},
    "prompts/get": _prompts_get,
}


def _json(body: JSON, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(request_id: object, code: int, message: str, status: int = 200) -> web.Response:
    error = {"code": code, "message": message}
    return _json({"jsonrpc": "2.0", "id": request_id, "error": error}, status)


async def post_mcp(request: web.Request) -> web.Response:
    try:
        message = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(None, PARSE_ERROR, "the body is not JSON", 400)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _error(None, INVALID_REQUEST, "expected one JSON-RPC 2.0 message", 400)
    if "method" not in message or "id" not in message:
        return web.Response(status=202)  # a notification, or an answer to nothing we asked
    request_id, params = message["id"], message.get("params") or {}
    handler = METHODS.get(message["method"])
    if handler is None:
        return _error(request_id, METHOD_NOT_FOUND, f"unknown method: {message['method']!r}")
    if not isinstance(params, dict):
        return _error(request_id, INVALID_PARAMS, "'params' must be an object")
    try:
        result = handler(params)
    except RpcError as exc:
        return _error(request_id, exc.code, str(exc))
    return _json({"jsonrpc": "2.0", "id": request_id, "result": result})


async def no_stream(request: web.Request) -> web.Response:
    """No server-to-client stream and no sessions to end: the protocol's answer is 405."""
    return web.Response(status=405, headers={"Allow": "POST"})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/mcp", post_mcp)
    app.router.add_get("/mcp", no_stream)
    app.router.add_delete("/mcp", no_stream)
    return app


def run(host: str, port: int) -> None:
    """Serve until interrupted."""
    print(f"demo upstream: MCP Streamable HTTP at http://{host}:{port}/mcp", flush=True)
    web.run_app(create_app(), host=host, port=port, print=None, access_log=None)
