"""The `/roles` admin API: list, read, create, replace and delete the roles made through it;
the roles of the settings (`ROLES`, `ROLES_FILE`) are shown, marked, and cannot be changed
here. A write returns once every worker enforces it (`Registry.changed`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import Invalid, admin_route, json_body, respond
from gateway.keys import REGISTRY, ROLES, STORE
from gateway.role_book import StoredRole, delete_role, save_role
from gateway.roles import Role, RoleError, parse_role
from gateway.store import Conflict, NotFound


def _configured(role: Role) -> dict[str, Any]:
    return {**role.as_json(), "source": "settings"}


def _stored(stored: StoredRole) -> dict[str, Any]:
    return {
        **stored.role.as_json(),
        "source": "api",
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
    }


def _not_configured(request: web.Request, name: str) -> None:
    if any(r.name == name for r in request.app[ROLES].configured):
        raise Conflict(f"role {name!r} comes from ROLES or ROLES_FILE; change it there")


def _parsed(payload: dict[str, Any], name: str | None = None) -> Role:
    try:
        return parse_role(payload, name)
    except RoleError as exc:
        raise Invalid(str(exc)) from None


@admin_route
async def list_roles(request: web.Request) -> web.Response:
    book = request.app[ROLES]
    await request.app[REGISTRY].ensure_current()
    return respond({"roles": [*map(_configured, book.configured), *map(_stored, book.stored)]})


@admin_route
async def get_role(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    book = request.app[ROLES]
    await request.app[REGISTRY].ensure_current()
    for role in book.configured:
        if role.name == name:
            return respond(_configured(role))
    for stored in book.stored:
        if stored.role.name == name:
            return respond(_stored(stored))
    raise NotFound(f"role {name!r} does not exist")


@admin_route
async def create_role(request: web.Request) -> web.Response:
    role = _parsed(await json_body(request))
    _not_configured(request, role.name)
    stored = await save_role(request.app[STORE], role, create=True)
    await request.app[REGISTRY].changed()
    return respond(_stored(stored), status=201)


@admin_route
async def replace_role(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    _not_configured(request, name)
    role = _parsed(await json_body(request), name)
    stored = await save_role(request.app[STORE], role, create=False)
    await request.app[REGISTRY].changed()
    return respond(_stored(stored))


@admin_route
async def remove_role(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    _not_configured(request, name)
    await delete_role(request.app[STORE], name)
    await request.app[REGISTRY].changed()
    return web.Response(status=204)


def install(app: web.Application) -> None:
    app.router.add_get("/roles", list_roles)
    app.router.add_post("/roles", create_role)
    app.router.add_get("/roles/{name}", get_role)
    app.router.add_put("/roles/{name}", replace_role)
    app.router.add_delete("/roles/{name}", remove_role)
