"""The admin UI's tool pages: the searchable list, one tool's page, and its forms.

An administrator enables or disables a tool and changes its settings and curation through
`tool_settings` and `curation_changes`, as `PATCH /tools/{name}` does, and tries a tool
through the dispatcher, as a `/rpc` call of the signed-in administrator would run.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from gateway import jsonrpc
from gateway.admin import Invalid, tool_settings, tool_view
from gateway.curation import curation_changes
from gateway.keys import DISPATCHER, REGISTRY, ROLES, STORE
from gateway.mcp import versions
from gateway.mcp.context import Context, Endpoint, Era, Refused
from gateway.ui.pages import EXPECTED, Visit, failure, form, json_field, number_field, page

ARGUMENTS_SHOWN_MAX = 64


def _matches(view: dict[str, Any], words: list[str]) -> bool:
    text = " ".join(
        str(view.get(key) or "") for key in ("name", "upstream", "title", "description")
    ).lower()
    return all(word in text for word in words)


async def _tools(current: Visit) -> web.StreamResponse:
    store = current.request.app[STORE]
    query = current.request.query.get("q", "")[:200]
    curated = {o.name: o for o in await store.list_tool_overrides()}
    views = [tool_view(r, curated.get(r.name)) for r in await store.list_tools()]
    words = query.lower().split()
    shown = sorted((v for v in views if _matches(v, words)), key=lambda v: v["name"])
    return current.render("tools.html", tools=shown, query=query, total=len(views))


async def _tool_page(
    current: Visit, status: int = 200, errors: list[str] | None = None, **extra: Any
) -> web.Response:
    name = current.request.match_info["name"]
    store = current.request.app[STORE]
    record = await store.get_tool(name)
    if record is None:
        return current.render(
            "problem.html", 404, title="Not found", message=f"tool '{name}' does not exist"
        )
    view = tool_view(record, await store.get_tool_override(name))
    extra.setdefault("arguments", _skeleton(view["input_schema"]))
    return current.render("tool.html", status, tool=view, errors=errors or [], **extra)


def _skeleton(schema: Any) -> str:
    """An arguments object to start from: each property of the input schema, empty."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return "{}"
    empty = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
    example = {}
    for key, spec in list(properties.items())[:ARGUMENTS_SHOWN_MAX]:
        kind = spec.get("type") if isinstance(spec, dict) else None
        example[key] = empty.get(kind, None) if isinstance(kind, str) else None
    return orjson.dumps(example, option=orjson.OPT_INDENT_2).decode()


async def _tool(current: Visit) -> web.StreamResponse:
    return await _tool_page(current)


async def _change_tool(current: Visit, payload: dict[str, Any], done: str) -> web.StreamResponse:
    """What `PATCH /tools/{name}` does with the same body."""
    name = current.request.match_info["name"]
    app = current.request.app
    try:
        settings = tool_settings(payload)
        try:
            curation = curation_changes(payload)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if curation:
            await app[STORE].curate_tool(name, curation)
        await app[STORE].update_tool(name, settings)
    except EXPECTED as exc:
        return await _tool_page(current, 422, [failure(exc)])
    await app[REGISTRY].changed()
    return current.redirect(f"/admin/tools/{name}", done)


async def _toggle_tool(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    enabled = fields.get("enabled") == "true"
    done = "Tool enabled." if enabled else "Tool disabled."
    return await _change_tool(current, {"enabled": enabled}, done)


def _text(fields: dict[str, str], name: str) -> str | None:
    return fields.get(name, "").strip() or None


async def _tool_settings(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    try:
        payload = {
            "cache_ttl": number_field(fields, "cache_ttl", float),
            "rate_limit": number_field(fields, "rate_limit", int),
            "alias": _text(fields, "alias"),
            "title": _text(fields, "title"),
            "description": _text(fields, "description"),
            "tags": [t for t in fields.get("tags", "").replace(",", " ").split() if t],
        }
    except Invalid as exc:
        return await _tool_page(current, 422, [str(exc)])
    return await _change_tool(current, payload, "Settings saved.")


async def _try_tool(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    request = current.request
    name = fields.get("tool", "")
    raw = fields.get("arguments", "")
    try:
        arguments = json_field(fields, "arguments", {})
        if not isinstance(arguments, dict):
            raise Invalid("the arguments must be a JSON object")
    except Invalid as exc:
        return await _tool_page(current, 422, [str(exc)], arguments=raw)
    assert current.session is not None
    caller = current.session.principal
    app = request.app
    try:
        where = Endpoint.resolve(
            caller, request.remote, None, app[REGISTRY].catalogue, app[ROLES].grant(caller)
        )
    except Refused as exc:
        return await _tool_page(current, exc.status, [exc.message], arguments=raw)
    ctx = Context(
        endpoint=where,
        view=where.view,
        era=Era.PLAIN,
        version=versions.LATEST_HANDSHAKE,
        transport="admin-ui",
    )
    message = jsonrpc.Request(
        "tools/call", {"name": name, "arguments": arguments}, 1, is_notification=False
    )
    started = time.monotonic()
    reply = await app[DISPATCHER].request(message, ctx)
    took = time.monotonic() - started
    if reply.error is not None:
        error = reply.error.to_dict()
        return await _tool_page(
            current,
            200,
            arguments=raw,
            call={"error": error, "seconds": took},
        )
    return await _tool_page(
        current, 200, arguments=raw, call={"result": reply.result, "seconds": took}
    )


def add_routes(router: web.UrlDispatcher) -> None:
    """The tool pages and forms, under `/admin/tools`."""
    router.add_get("/admin/tools", page(_tools))
    router.add_get("/admin/tools/{name}", page(_tool))
    router.add_post("/admin/tools/{name}/enabled", form(_toggle_tool))
    router.add_post("/admin/tools/{name}/settings", form(_tool_settings))
    router.add_post("/admin/tools/{name}/call", form(_try_tool))
