"""The roles' checks on MCP methods: lists filtered, uses refused with -32003.

Each check is a no-op when the endpoint has no grant (no role defined, or an admin token),
so a gateway without roles pays one attribute read per call.
"""

from __future__ import annotations

from typing import Any

from gateway.catalogue import Tool, View
from gateway.jsonrpc import RPCError
from gateway.mcp.context import Context
from gateway.roles import Grant

JSON = dict[str, Any]
FORBIDDEN = -32003
"""The JSON-RPC error of a call, read or get the caller's roles do not allow."""

_LISTED_KEYS = {
    "tool_list": ("tools", "name"),
    "resource_list": ("resources", "uri"),
    "template_list": ("resources", "uriTemplate"),
    "prompt_list": ("prompts", "name"),
}


def _tool_names(tool: Tool) -> tuple[str, str]:
    return (tool.shown, tool.record.name)


def may_list_tool(grant: Grant | None, tool: Tool) -> bool:
    return grant is None or grant.lists("tools", _tool_names(tool), tool.tags)


def listed(grant: Grant | None, view: View, listing: str, items: list[JSON]) -> list[JSON]:
    """The items of one of the view's listings that the grant lets its caller see."""
    if grant is None or (listing == "tool_list" and view.search is not None):
        return items  # a search-mode server lists its search tools; results are filtered
    kind, key = _LISTED_KEYS[listing]
    if kind == "tools":
        return [i for i in items if may_list_tool(grant, view.tools[i[key]])]
    return [i for i in items if grant.lists(kind, (str(i[key]),))]


def _refuse(grant: Grant, what: str) -> RPCError:
    return RPCError(FORBIDDEN, grant.refusal(what), {"reason": "forbidden"})


def check_tool(ctx: Context, tool: Tool) -> None:
    grant = ctx.endpoint.grant
    if grant is not None and not grant.uses("tools", _tool_names(tool), tool.tags):
        raise _refuse(grant, f"tool '{tool.shown}'")


def check_resource(ctx: Context, uri: str) -> None:
    grant = ctx.endpoint.grant
    if grant is not None and not grant.uses("resources", (uri,)):
        raise _refuse(grant, f"resource '{uri}'")


def check_prompt(ctx: Context, name: str) -> None:
    grant = ctx.endpoint.grant
    if grant is not None and not grant.uses("prompts", (name,)):
        raise _refuse(grant, f"prompt '{name}'")
