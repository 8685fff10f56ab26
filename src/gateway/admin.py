"""The admin REST API: `/upstreams`, `/tools`, `/resources` and `/prompts`, JSON in and out,
`admin` scope required.

Header values of upstreams are secrets: responses show only their names. Handlers raise the
store's and the upstream service's errors; `admin_route` turns them into JSON answers.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway import upstream_oauth
from gateway.access import admin
from gateway.catalogue import prompt_listing, resource_listing, template_listing
from gateway.contracts import BackendError, Supervised
from gateway.curation import CURATED_FIELDS, curation_changes, curation_view
from gateway.keys import LEADER_USE, REGISTRY, STORE, UPSTREAMS
from gateway.leader import read_health
from gateway.middlewares import error_response
from gateway.store import (
    Conflict,
    NotFound,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    StoreError,
    ToolOverride,
    ToolRecord,
    Unstorable,
    UpstreamRecord,
)
from gateway.upstream_validation import InvalidUpstream
from gateway.upstreams import DiscoveryFailed

STATUS_TIMEOUT = 5.0
"""How long `GET /upstreams/{name}` waits for a supervised backend's status."""


def respond(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
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
        "headers": sorted(h for h in record.headers if h != upstream_oauth.SECRET_KEY),
        "session": record.session,
        "options": {key: _option_view(value) for key, value in record.options.items()},
        "notes": record.notes,
        "builtin": record.builtin,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    oauth = view["options"].get(upstream_oauth.FIELD)
    if upstream_oauth.SECRET_KEY in record.headers and isinstance(oauth, dict):
        view["options"][upstream_oauth.FIELD] = {
            **oauth,
            "client_secret": "(encrypted, not shown)",
        }
    if tools is not None:
        view["tools"] = tools
    return view


OPTION_SHOWN_BYTES = 4096
"""A larger option (an inline OpenAPI document, say) shows only as its size in listings."""


def _option_view(value: Any) -> Any:
    size = len(orjson.dumps(value))
    return value if size <= OPTION_SHOWN_BYTES else f"({size} bytes, not shown)"


def tool_view(record: ToolRecord, override: ToolOverride | None = None) -> dict[str, Any]:
    """The upstream's values of a tool, its operator settings and its curation."""
    return {
        "name": record.name,
        "upstream": record.upstream,
        "original_name": record.definition.name,
        "title": record.definition.title,
        "description": record.definition.description,
        "input_schema": record.definition.input_schema,
        "output_schema": record.definition.output_schema,
        "annotations": record.definition.annotations,
        "enabled": record.enabled,
        "cache_ttl": record.cache_ttl,
        "rate_limit": record.rate_limit,
        **curation_view(record, override),
    }


class Invalid(ValueError):
    """A request the admin API refuses as unprocessable (422)."""


def store_failure(exc: Exception) -> web.Response:
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, str(exc))
    if isinstance(exc, (InvalidUpstream, Invalid, Unstorable)):
        return error_response(422, str(exc))
    if isinstance(exc, DiscoveryFailed):
        return error_response(502, f"could not discover the upstream's tools: {exc}")
    return error_response(503, f"store unavailable: {exc}")


_EXPECTED = (NotFound, Conflict, InvalidUpstream, Invalid, DiscoveryFailed, StoreError)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def admin_route(handler: Handler) -> Handler:
    """An admin-scope route whose expected failures become JSON errors."""

    @functools.wraps(handler)
    async def route(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except _EXPECTED as exc:
            return store_failure(exc)

    return admin(route)


def _tool_counts(request: web.Request) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tool in request.app[REGISTRY].catalogue.tools.values():
        counts[tool.record.upstream] = counts.get(tool.record.upstream, 0) + 1
    return counts


def _upstream_response(
    request: web.Request,
    record: UpstreamRecord,
    status: int = 200,
) -> web.Response:
    return respond(upstream_view(record, _tool_counts(request).get(record.name, 0)), status)


@admin_route
async def list_upstreams(request: web.Request) -> web.Response:
    records = await request.app[STORE].list_upstreams()
    counts = _tool_counts(request)
    views = []
    for record in records:
        view = upstream_view(record, counts.get(record.name, 0))
        view["health"] = await read_health(request.app[LEADER_USE], record.name)
        views.append(view)
    return respond({"upstreams": views})


@admin_route
async def create_upstream(request: web.Request) -> web.Response:
    record = await request.app[UPSTREAMS].create(await json_body(request))
    return _upstream_response(request, record, status=201)


@admin_route
async def get_upstream(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    record = await request.app[STORE].get_upstream(name)
    if record is None:
        raise NotFound(f"upstream '{name}' does not exist")
    view = upstream_view(record, _tool_counts(request).get(name, 0))
    view["health"] = await read_health(request.app[LEADER_USE], name)
    backend = request.app[REGISTRY].backends.get(name)
    if isinstance(backend, Supervised):
        view["status"] = await _status(backend)
    return respond(view)


async def _status(backend: Supervised) -> dict[str, Any]:
    try:
        async with asyncio.timeout(STATUS_TIMEOUT):
            return await backend.status()
    except (TimeoutError, BackendError) as exc:
        return {"state": "unknown", "error": str(exc) or "no answer in time"}


@admin_route
async def patch_upstream(request: web.Request) -> web.Response:
    payload = await json_body(request)
    record = await request.app[UPSTREAMS].update(request.match_info["name"], payload)
    return _upstream_response(request, record)


@admin_route
async def delete_upstream(request: web.Request) -> web.Response:
    await request.app[UPSTREAMS].delete(request.match_info["name"])
    return web.Response(status=204)


@admin_route
async def refresh_upstream(request: web.Request) -> web.Response:
    record = await request.app[UPSTREAMS].refresh(request.match_info["name"])
    return _upstream_response(request, record)


@admin_route
async def list_tools(request: web.Request) -> web.Response:
    store = request.app[STORE]
    records = await store.list_tools()
    curated = {o.name: o for o in await store.list_tool_overrides()}
    return respond(
        {
            "tools": [
                tool_view(r, curated.get(r.name)) for r in sorted(records, key=lambda r: r.name)
            ]
        }
    )


def _tool_name(request: web.Request) -> str:
    """The gateway name of the tool the path names, by gateway name or by alias."""
    name = request.match_info["name"]
    tool = request.app[REGISTRY].catalogue.everything.tools.get(name)
    return tool.record.name if tool is not None else name


@admin_route
async def get_tool(request: web.Request) -> web.Response:
    name = _tool_name(request)
    store = request.app[STORE]
    record = await store.get_tool(name)
    if record is None:
        raise NotFound(f"tool '{name}' does not exist")
    return respond(tool_view(record, await store.get_tool_override(name)))


TOOL_SETTINGS = ("enabled", "cache_ttl", "rate_limit")
MAX_TOOL_SETTING = 2**31 - 1
"""Largest `cache_ttl` (seconds) and `rate_limit`: the store keeps `rate_limit` in a 32-bit
INTEGER column, and a larger number would fail there rather than be refused here."""


def tool_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """The operator settings a PATCH body changes, checked."""
    unknown = set(payload) - {*TOOL_SETTINGS, *CURATED_FIELDS}
    if unknown:
        raise Invalid(
            f"unknown field(s): {', '.join(sorted(unknown))}; a tool's changeable fields are "
            f"{', '.join(TOOL_SETTINGS + CURATED_FIELDS)}"
        )
    if "enabled" in payload and not isinstance(payload["enabled"], bool):
        raise Invalid("'enabled' must be true or false")
    ttl = payload.get("cache_ttl")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TOOL_SETTING
    ):
        raise Invalid(
            f"'cache_ttl' must be a positive number of seconds up to {MAX_TOOL_SETTING}, or null"
        )
    limit = payload.get("rate_limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TOOL_SETTING
    ):
        raise Invalid(
            f"'rate_limit' must be a positive integer up to {MAX_TOOL_SETTING} (calls per "
            "minute), or null"
        )
    if not payload:
        raise Invalid(f"nothing to change; send {', '.join(TOOL_SETTINGS + CURATED_FIELDS)}")
    return {key: value for key, value in payload.items() if key in TOOL_SETTINGS}


@admin_route
async def patch_tool(request: web.Request) -> web.Response:
    payload = await json_body(request)
    settings = tool_settings(payload)
    try:
        curation = curation_changes(payload)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    name = _tool_name(request)
    store = request.app[STORE]
    if curation:  # first: it may conflict, and then nothing is changed
        await store.curate_tool(name, curation)
    record = await store.update_tool(name, settings)
    await request.app[REGISTRY].changed()
    return respond(tool_view(record, await store.get_tool_override(name)))


def resource_view(record: ResourceRecord) -> dict[str, Any]:
    return {**resource_listing(record), "upstream": record.upstream, "enabled": record.enabled}


def template_view(record: ResourceTemplateRecord) -> dict[str, Any]:
    return {**template_listing(record), "upstream": record.upstream, "enabled": record.enabled}


def prompt_view(record: PromptRecord) -> dict[str, Any]:
    return {
        **prompt_listing(record),
        "upstream": record.upstream,
        "original_name": record.definition.name,
        "enabled": record.enabled,
    }


def _enabled_only(payload: dict[str, Any]) -> dict[str, Any]:
    if set(payload) != {"enabled"} or not isinstance(payload["enabled"], bool):
        raise Invalid('send {"enabled": true} or {"enabled": false}')
    return payload


@admin_route
async def list_resources(request: web.Request) -> web.Response:
    store = request.app[STORE]
    resources = await store.list_resources()
    templates = await store.list_resource_templates()
    return respond(
        {
            "resources": [
                resource_view(r) for r in sorted(resources, key=lambda r: r.definition.uri)
            ],
            "resource_templates": [
                template_view(t) for t in sorted(templates, key=lambda t: t.definition.uri_template)
            ],
        }
    )


@admin_route
async def patch_resource(request: web.Request) -> web.Response:
    uri = request.query.get("uri", "")
    changes = _enabled_only(await json_body(request))
    store = request.app[STORE]
    if await store.get_resource(uri) is not None:
        view = resource_view(await store.update_resource(uri, changes))
    else:
        view = template_view(await store.update_resource_template(uri, changes))
    await request.app[REGISTRY].changed()
    return respond(view)


@admin_route
async def list_prompts(request: web.Request) -> web.Response:
    prompts = await request.app[STORE].list_prompts()
    return respond({"prompts": [prompt_view(p) for p in sorted(prompts, key=lambda p: p.name)]})


@admin_route
async def get_prompt(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    record = await request.app[STORE].get_prompt(name)
    if record is None:
        raise NotFound(f"prompt '{name}' does not exist")
    return respond(prompt_view(record))


@admin_route
async def patch_prompt(request: web.Request) -> web.Response:
    changes = _enabled_only(await json_body(request))
    record = await request.app[STORE].update_prompt(request.match_info["name"], changes)
    await request.app[REGISTRY].changed()
    return respond(prompt_view(record))


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
    # Resource URIs contain slashes and colons: they travel as ?uri=...
    router.add_get("/resources", list_resources)
    router.add_patch("/resources", patch_resource)
    router.add_get("/prompts", list_prompts)
    router.add_get("/prompts/{name}", get_prompt)
    router.add_patch("/prompts/{name}", patch_prompt)
