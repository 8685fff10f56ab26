"""The admin REST API: `/upstreams` and `/tools`, JSON in and out, `admin` scope required.

Header values of upstreams are secrets: responses show only their names.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.access import admin
from gateway.keys import LEADER_USE, REGISTRY, STORE, UPSTREAMS
from gateway.leader import read_health
from gateway.middlewares import error_response
from gateway.store import Conflict, NotFound, StoreError, ToolRecord, UpstreamRecord
from gateway.upstreams import DiscoveryFailed, InvalidUpstream


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return data


def upstream_view(record: UpstreamRecord, tools: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": record.name,
        "transport": record.transport,
        "url": record.url,
        "prefix": record.prefix,
        "headers": sorted(record.headers),
        "builtin": record.builtin,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if tools is not None:
        view["tools"] = tools
    return view


def tool_view(record: ToolRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "upstream": record.upstream,
        "original_name": record.original_name,
        "title": record.title,
        "description": record.description,
        "input_schema": record.input_schema,
        "output_schema": record.output_schema,
        "annotations": record.annotations,
        "enabled": record.enabled,
        "cache_ttl": record.cache_ttl,
        "rate_limit": record.rate_limit,
    }


def _failure(exc: Exception) -> web.Response:
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, str(exc))
    if isinstance(exc, InvalidUpstream):
        return error_response(422, str(exc))
    if isinstance(exc, DiscoveryFailed):
        return error_response(502, f"could not discover the upstream's tools: {exc}")
    return error_response(503, f"store unavailable: {exc}")


_EXPECTED = (NotFound, Conflict, InvalidUpstream, DiscoveryFailed, StoreError)


def _tool_counts(request: web.Request) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tool in request.app[REGISTRY].catalogue.tools.values():
        counts[tool.record.upstream] = counts.get(tool.record.upstream, 0) + 1
    return counts


@admin
async def list_upstreams(request: web.Request) -> web.Response:
    try:
        records = await request.app[STORE].list_upstreams()
    except StoreError as exc:
        return _failure(exc)
    counts = _tool_counts(request)
    views = []
    for record in records:
        view = upstream_view(record, counts.get(record.name, 0))
        view["health"] = await read_health(request.app[LEADER_USE], record.name)
        views.append(view)
    return _json({"upstreams": views})


@admin
async def create_upstream(request: web.Request) -> web.Response:
    payload = await _body(request)
    try:
        record = await request.app[UPSTREAMS].create(payload)
    except _EXPECTED as exc:
        return _failure(exc)
    return _json(upstream_view(record, _tool_counts(request).get(record.name, 0)), status=201)


@admin
async def get_upstream(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        record = await request.app[STORE].get_upstream(name)
    except StoreError as exc:
        return _failure(exc)
    if record is None:
        return error_response(404, f"upstream '{name}' does not exist")
    view = upstream_view(record, _tool_counts(request).get(name, 0))
    view["health"] = await read_health(request.app[LEADER_USE], name)
    return _json(view)


@admin
async def patch_upstream(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    payload = await _body(request)
    try:
        record = await request.app[UPSTREAMS].update(name, payload)
    except _EXPECTED as exc:
        return _failure(exc)
    return _json(upstream_view(record, _tool_counts(request).get(name, 0)))


@admin
async def delete_upstream(request: web.Request) -> web.Response:
    try:
        await request.app[UPSTREAMS].delete(request.match_info["name"])
    except _EXPECTED as exc:
        return _failure(exc)
    return web.Response(status=204)


@admin
async def refresh_upstream(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        record = await request.app[UPSTREAMS].refresh(name)
    except _EXPECTED as exc:
        return _failure(exc)
    return _json(upstream_view(record, _tool_counts(request).get(name, 0)))


@admin
async def list_tools(request: web.Request) -> web.Response:
    try:
        records = await request.app[STORE].list_tools()
    except StoreError as exc:
        return _failure(exc)
    return _json({"tools": [tool_view(r) for r in sorted(records, key=lambda r: r.name)]})


@admin
async def get_tool(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        record = await request.app[STORE].get_tool(name)
    except StoreError as exc:
        return _failure(exc)
    if record is None:
        return error_response(404, f"tool '{name}' does not exist")
    return _json(tool_view(record))


def _tool_changes(payload: dict[str, Any]) -> dict[str, Any]:
    allowed = {"enabled", "cache_ttl", "rate_limit"}
    unknown = set(payload) - allowed
    if unknown:
        raise InvalidUpstream(
            f"unknown field(s): {', '.join(sorted(unknown))}; a tool's changeable fields are "
            "enabled, cache_ttl and rate_limit"
        )
    if "enabled" in payload and not isinstance(payload["enabled"], bool):
        raise InvalidUpstream("'enabled' must be true or false")
    ttl = payload.get("cache_ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise InvalidUpstream("'cache_ttl' must be a positive number of seconds, or null")
    limit = payload.get("rate_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidUpstream("'rate_limit' must be a positive integer (calls per minute), or null")
    if not payload:
        raise InvalidUpstream("nothing to change; send enabled, cache_ttl or rate_limit")
    return payload


@admin
async def patch_tool(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        changes = _tool_changes(await _body(request))
        record = await request.app[STORE].update_tool(name, changes)
        await request.app[REGISTRY].changed()
    except _EXPECTED as exc:
        return _failure(exc)
    return _json(tool_view(record))


def install(app: web.Application) -> None:
    router = app.router
    router.add_get("/upstreams", list_upstreams)
    router.add_post("/upstreams", create_upstream)
    router.add_get("/upstreams/{name}", get_upstream)
    router.add_patch("/upstreams/{name}", patch_upstream)
    router.add_delete("/upstreams/{name}", delete_upstream)
    router.add_post("/upstreams/{name}/refresh", refresh_upstream)
    router.add_get("/tools", list_tools)
    router.add_get("/tools/{name}", get_tool)
    router.add_patch("/tools/{name}", patch_tool)
