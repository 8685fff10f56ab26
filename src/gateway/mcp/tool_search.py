"""The three tools a search-mode virtual server shows instead of its own: `search_tools`,
`describe_tool` and `call_tool`. A call through `call_tool` takes the normal call path
(argument check, rate limits, the results cache and the rest of `UpstreamCalls`).

Malformed arguments of these tools are `InvalidArguments`, as for any tool whose schema
they break (-32602, or from 2025-11-25 on an `isError` result); a name that is not one of
the server's tools is a tool error (`isError`), so that the agent reads it and searches
again.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.catalogue import Tool
from gateway.mcp import permissions
from gateway.mcp.context import Context
from gateway.mcp.upstream_calls import InvalidArguments, UpstreamCalls, error_result
from gateway.toolsearch import (
    CALL_TOOL,
    DESCRIBE_TOOL,
    META_NAMES,
    QUERY_CHARS_MAX,
    SEARCH_LIMIT_DEFAULT,
    SEARCH_LIMIT_MAX,
    SEARCH_TOOLS,
    Entry,
    ToolIndex,
)

JSON = dict[str, Any]
SUMMARY_CHARS = 200
"""A hit shows this much of a tool's description: enough to choose, small enough to list."""


def _invalid(tool: str, message: str) -> InvalidArguments:
    return InvalidArguments(tool, message)


def _only(tool: str, arguments: JSON, allowed: set[str]) -> None:
    unknown = set(arguments) - allowed
    if unknown:
        raise _invalid(tool, f"unknown argument(s): {', '.join(sorted(unknown))}")


def _name(tool: str, arguments: JSON) -> str:
    name = arguments.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(tool, "'name' must be a non-empty string")
    return name


def _structured(data: JSON) -> JSON:
    return {
        "content": [{"type": "text", "text": orjson.dumps(data).decode()}],
        "structuredContent": data,
    }


def summary(description: str) -> str:
    line = description.strip().split("\n", 1)[0]
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


def _visible(index: ToolIndex, query: str, limit: int, ctx: Context) -> list[tuple[Entry, float]]:
    """The best `limit` hits among the tools the caller's roles let it see."""
    grant = ctx.endpoint.grant
    if grant is None:
        return index.search(query, limit)
    hits = index.search(query, len(index.entries))
    return [
        (entry, score)
        for entry, score in hits
        if permissions.may_list_tool(grant, ctx.view.tools[entry.name])
    ][:limit]


class ToolSearchCalls:
    def __init__(self, calls: UpstreamCalls) -> None:
        self.calls = calls

    @staticmethod
    def handles(name: str, ctx: Context) -> bool:
        return ctx.view.search is not None and name in META_NAMES

    async def call(self, name: str, arguments: JSON, ctx: Context, meta: JSON | None) -> JSON:
        index = ctx.view.search
        assert index is not None  # `handles` said so
        if name == SEARCH_TOOLS:
            await index.ready()
            return self.search(index, arguments, ctx)
        if name == DESCRIBE_TOOL:
            _only(name, arguments, {"name"})
            tool = self._tool(_name(name, arguments), ctx)
            return tool if isinstance(tool, dict) else _structured(tool.listing)
        _only(name, arguments, {"name", "arguments"})
        tool = self._tool(_name(CALL_TOOL, arguments), ctx)
        if isinstance(tool, dict):
            return tool
        permissions.check_tool(ctx, tool)
        inner = arguments.get("arguments")
        if inner is None:
            inner = {}
        if not isinstance(inner, dict):
            raise _invalid(CALL_TOOL, "'arguments' must be an object")
        return await self.calls.call_tool(tool, inner, ctx, meta)

    @staticmethod
    def search(index: ToolIndex, arguments: JSON, ctx: Context) -> JSON:
        """The `search_tools` result for `arguments`."""
        _only(SEARCH_TOOLS, arguments, {"query", "limit"})
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _invalid(SEARCH_TOOLS, "'query' must be a non-empty string")
        if len(query) > QUERY_CHARS_MAX:
            raise _invalid(SEARCH_TOOLS, f"'query' is longer than {QUERY_CHARS_MAX} characters")
        limit = arguments.get("limit", SEARCH_LIMIT_DEFAULT)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= SEARCH_LIMIT_MAX
        ):
            raise _invalid(SEARCH_TOOLS, f"'limit' must be an integer from 1 to {SEARCH_LIMIT_MAX}")
        hits = [
            {
                "name": entry.name,
                **({"title": entry.title} if entry.title else {}),
                "description": summary(entry.description),
                "score": round(score, 4),
            }
            for entry, score in _visible(index, query, limit, ctx)
        ]
        return _structured({"tools": hits})

    @staticmethod
    def _tool(name: str, ctx: Context) -> Tool | JSON:
        """The server's enabled tool of that name (as agents see it, or its gateway name),
        or the error result telling the agent there is none."""
        tool = ctx.view.tools.get(name)
        if (
            tool is None
            or not tool.record.enabled
            or not permissions.may_list_tool(ctx.endpoint.grant, tool)
        ):
            return error_result(f"Unknown tool: {name}. Find tools with {SEARCH_TOOLS}.")
        return tool
