"""Virtual servers: named bundles of tools, resources and prompts, each reachable at
`/servers/{id}/mcp` and `/servers/{id}/sse`. Admin CRUD under `/servers`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.admin import Invalid, admin_route, json_body, respond
from gateway.catalogue import Catalogue
from gateway.curation import DESCRIPTION_CHARS_MAX, TITLE_CHARS_MAX, tags
from gateway.keys import PLUGINS, REGISTRY, STORE
from gateway.plugins import Plugins
from gateway.store import TOOL_MODES, NotFound, ServerRecord

SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FIELDS = {
    "id",
    "name",
    "description",
    "tools",
    "tags",
    "tool_mode",
    "resources",
    "prompts",
    "interceptors",
}


def server_view(record: ServerRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "tools": list(record.tools),
        "tags": list(record.tags),
        "tool_mode": record.tool_mode,
        "resources": list(record.resources),
        "prompts": list(record.prompts),
        "interceptors": (None if record.interceptors is None else list(record.interceptors)),
        "endpoints": {"mcp": f"/servers/{record.id}/mcp", "sse": f"/servers/{record.id}/sse"},
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _names(payload: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = payload.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"'{key}' must be a list of strings")
    return tuple(dict.fromkeys(value))


def _interceptors(
    plugins: Plugins, payload: Mapping[str, Any], current: ServerRecord
) -> tuple[str, ...] | None:
    """The server's own interceptors: a list of installed names, or null for the gateway's."""
    if "interceptors" not in payload:
        return current.interceptors
    if payload["interceptors"] is None:
        return None
    names = _names(payload, "interceptors")
    installed = plugins.interceptors
    unknown = [name for name in names if name not in installed.items]
    if unknown:
        raise Invalid(
            f"unknown interceptor(s): {', '.join(unknown)}; "
            f"installed: {', '.join(installed.names()) or 'none'}"
        )
    return names


def _record(
    request: web.Request,
    payload: dict[str, Any],
    current: ServerRecord | None,
) -> ServerRecord:
    record = server_record(payload, current, request.app[PLUGINS])
    check_members(record, request.app[REGISTRY].catalogue)
    return record


def server_record(
    payload: Mapping[str, Any], current: ServerRecord | None, plugins: Plugins
) -> ServerRecord:
    """The server a POST (no `current`) or PATCH body makes, its fields checked; raise
    `Invalid`. Its members are checked against a catalogue by `check_members`."""
    unknown = set(payload) - _FIELDS
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    if current is None:
        server_id = payload.get("id")
        if not isinstance(server_id, str) or not SERVER_ID.fullmatch(server_id):
            raise Invalid("'id' must be 1-64 characters of letters, digits, '_' and '-'")
        current = ServerRecord(id=server_id, name=server_id)
    elif "id" in payload and payload["id"] != current.id:
        raise Invalid("'id' cannot change")
    name = payload.get("name", current.name)
    description = payload.get("description", current.description)
    if not isinstance(name, str) or not isinstance(description, str):
        raise Invalid("'name' and 'description' must be strings")
    if len(name) > TITLE_CHARS_MAX:
        raise Invalid(f"'name' must be at most {TITLE_CHARS_MAX} characters")
    if len(description) > DESCRIPTION_CHARS_MAX:
        raise Invalid(f"'description' must be at most {DESCRIPTION_CHARS_MAX} characters")
    tool_mode = payload.get("tool_mode", current.tool_mode)
    if tool_mode not in TOOL_MODES:
        raise Invalid(f"'tool_mode' must be one of {', '.join(TOOL_MODES)}")
    try:
        tagged = tags(payload["tags"]) if "tags" in payload else current.tags
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    record = ServerRecord(
        id=current.id,
        name=name,
        description=description,
        tools=_names(payload, "tools") if "tools" in payload else current.tools,
        resources=_names(payload, "resources") if "resources" in payload else current.resources,
        prompts=_names(payload, "prompts") if "prompts" in payload else current.prompts,
        interceptors=_interceptors(plugins, payload, current),
        created_at=current.created_at,
        tags=tagged,
        tool_mode=tool_mode,
    )
    return record


def check_members(record: ServerRecord, catalogue: Catalogue) -> None:
    """Raise `Invalid` naming the members of `record` that `catalogue` does not hold."""
    everything = catalogue.everything
    templates = {t.uri_template for t in everything.templates}
    missing = (
        [f"tool '{t}'" for t in record.tools if t not in everything.tools]
        + [
            f"resource '{r}'"
            for r in record.resources
            if r not in everything.resources and r not in templates
        ]
        + [f"prompt '{p}'" for p in record.prompts if p not in everything.prompts]
    )
    if missing:
        raise Invalid(f"not in the catalogue: {', '.join(missing[:10])}")


@admin_route
async def list_servers(request: web.Request) -> web.Response:
    records = await request.app[STORE].list_servers()
    return respond({"servers": [server_view(r) for r in records]})


@admin_route
async def create_server(request: web.Request) -> web.Response:
    payload = await json_body(request)
    record = await request.app[STORE].create_server(_record(request, payload, None))
    await request.app[REGISTRY].changed()
    return respond(server_view(record), status=201)


async def _existing(request: web.Request) -> ServerRecord:
    server_id = request.match_info["server"]
    record = await request.app[STORE].get_server(server_id)
    if record is None:
        raise NotFound(f"virtual server '{server_id}' does not exist")
    return record


@admin_route
async def get_server(request: web.Request) -> web.Response:
    return respond(server_view(await _existing(request)))


@admin_route
async def patch_server(request: web.Request) -> web.Response:
    payload = await json_body(request)
    current = await _existing(request)
    record = await request.app[STORE].update_server(_record(request, payload, current))
    await request.app[REGISTRY].changed()
    return respond(server_view(record))


@admin_route
async def delete_server(request: web.Request) -> web.Response:
    server_id = request.match_info["server"]
    if not await request.app[STORE].delete_server(server_id):
        raise NotFound(f"virtual server '{server_id}' does not exist")
    await request.app[REGISTRY].changed()
    return web.Response(status=204)


def install(app: web.Application) -> None:
    app.router.add_get("/servers", list_servers)
    app.router.add_post("/servers", create_server)
    app.router.add_get("/servers/{server}", get_server)
    app.router.add_patch("/servers/{server}", patch_server)
    app.router.add_delete("/servers/{server}", delete_server)
