"""The admin UI: its mounting at `/admin`, and its sign-in, upstream, virtual-server and
health pages. The tool pages are `gateway.ui.tool_pages`, the managed-token page
`gateway.ui.token_pages`.

Every change goes through the functions the admin API uses (`UpstreamService`,
`server_record` and `check_members`, the store), so the UI enforces exactly the API's
rules and shows its messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import __version__
from gateway.access import public
from gateway.admin import Invalid, upstream_view
from gateway.cacheuse import CacheUse
from gateway.contracts import AuthError
from gateway.keys import (
    ADMIN_UI,
    AUTHENTICATOR,
    CACHE,
    LEADER,
    LEADER_USE,
    PLUGINS,
    REGISTRY,
    SETTINGS,
    STORE,
    UPSTREAMS,
)
from gateway.leader import read_health
from gateway.servers import check_members, server_record, server_view
from gateway.store import TOOL_MODES, NotFound
from gateway.ui import metrics_view, token_pages, tool_pages
from gateway.ui.pages import (
    EXPECTED,
    SIGN_IN,
    FormHandler,
    Visit,
    failure,
    form,
    json_field,
    open_page,
    page,
    templates,
    trusted_origins,
)
from gateway.ui.session import UiSessions
from gateway.ui.state import AdminUi
from gateway.upstreams import UpstreamService

TOKEN_CHARS_MAX = 16_384
CSRF_KEY_PURPOSE = "admin-ui-csrf"


# --- sign-in -------------------------------------------------------------------------------


async def _home(current: Visit) -> web.StreamResponse:
    return current.redirect("/admin/upstreams")


home = page(_home)


async def _sign_in_page(current: Visit) -> web.StreamResponse:
    if current.session is not None:
        return current.redirect("/admin/upstreams")
    return current.render("signin.html")


class TokenProbe:
    """The sign-in request as the authenticator sees it: the pasted token is its bearer
    token (a request whose body was read cannot be cloned with new headers)."""

    def __init__(self, request: web.Request, token: str) -> None:
        self._request = request
        headers = CIMultiDict(request.headers)
        headers[hdrs.AUTHORIZATION] = f"Bearer {token}"
        self.headers = CIMultiDictProxy(headers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


async def _sign_in(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    if not current.ui.auth_required:
        return current.redirect("/admin/upstreams")
    token = fields.get("token", "").strip()
    if not token or len(token) > TOKEN_CHARS_MAX or not token.isprintable():
        return current.render("signin.html", 400, errors=["Paste an admin token to sign in."])
    request = current.request
    probe = cast(web.Request, TokenProbe(request, token))
    try:
        who = await request.app[AUTHENTICATOR].authenticate(probe)
    except AuthError as exc:
        return current.render("signin.html", 401, errors=[f"Sign-in refused: {exc.message}"])
    if not who.is_admin:
        return current.render(
            "signin.html", 403, errors=["Sign-in refused: this token has no 'admin' scope."]
        )
    cookie, _ = await current.ui.sessions.sign_in(who)
    current.cookie, current.new_cookie = cookie, True
    return current.redirect("/admin/upstreams", f"Signed in as {who.subject}.")


async def _sign_out(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    await current.ui.sessions.sign_out(current.cookie)
    current.cookie, current.new_cookie = current.ui.sessions.new_cookie(), True
    return current.redirect(SIGN_IN, "Signed out.")


# --- upstreams -----------------------------------------------------------------------------


async def _upstreams_page(
    current: Visit, status: int = 200, errors: list[str] | None = None, entered: Any = None
) -> web.Response:
    app = current.request.app
    counts: dict[str, int] = {}
    for tool in app[REGISTRY].catalogue.tools.values():
        counts[tool.record.upstream] = counts.get(tool.record.upstream, 0) + 1
    views = []
    for record in await app[STORE].list_upstreams():
        view = upstream_view(record, counts.get(record.name, 0))
        view["health"] = await read_health(app[LEADER_USE], record.name)
        views.append(view)
    return current.render(
        "upstreams.html",
        status,
        upstreams=views,
        transports=app[PLUGINS].transports(),
        entered=entered or {},
        errors=errors or [],
    )


async def _upstreams(current: Visit) -> web.StreamResponse:
    return await _upstreams_page(current)


def _upstream_payload(fields: dict[str, str]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": fields.get("name", "").strip(),
        "transport": fields.get("transport", "").strip() or "streamable-http",
    }
    for key in ("url", "prefix", "session"):
        if fields.get(key, "").strip():
            payload[key] = fields[key].strip()
    headers = json_field(fields, "headers", None)
    if headers is not None:
        payload["headers"] = headers
    options = json_field(fields, "options", {})
    if not isinstance(options, dict):
        raise Invalid("'options' must be a JSON object of the transport's own fields")
    clash = set(options) & set(payload)
    if clash:
        raise Invalid(f"'options' repeats field(s) of the form: {', '.join(sorted(clash))}")
    return {**payload, **options}


async def _add_upstream(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    try:
        record = await current.request.app[UPSTREAMS].create(_upstream_payload(fields))
    except EXPECTED as exc:
        return await _upstreams_page(current, 422, [failure(exc)], fields)
    return current.redirect("/admin/upstreams", f"Upstream '{record.name}' added.")


def _upstream_action(
    act: Callable[[UpstreamService, str], Awaitable[object]], done: str
) -> FormHandler:
    """A form that applies `act` to the upstream named in the path, then says it was `done`."""

    async def handle(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
        name = current.request.match_info["name"]
        try:
            await act(current.request.app[UPSTREAMS], name)
        except EXPECTED as exc:
            return await _upstreams_page(current, 422, [failure(exc)])
        return current.redirect("/admin/upstreams", f"Upstream '{name}' {done}.")

    return handle


_refresh_upstream = _upstream_action(UpstreamService.refresh, "refreshed")
_remove_upstream = _upstream_action(UpstreamService.delete, "removed")


# --- virtual servers -----------------------------------------------------------------------


async def _servers_page(
    current: Visit, status: int = 200, errors: list[str] | None = None, entered: Any = None
) -> web.Response:
    app = current.request.app
    views = [server_view(r) for r in await app[STORE].list_servers()]
    tools = sorted(app[REGISTRY].catalogue.everything.tools)
    return current.render(
        "servers.html",
        status,
        servers=views,
        tools=tools,
        tool_modes=TOOL_MODES,
        entered=entered or {},
        errors=errors or [],
    )


async def _servers(current: Visit) -> web.StreamResponse:
    return await _servers_page(current)


async def _add_server(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    request = current.request
    app = request.app
    chosen = [t for t in (await request.post()).getall("tools", []) if isinstance(t, str)]
    payload: dict[str, Any] = {
        "id": fields.get("id", "").strip(),
        "name": fields.get("name", "").strip() or fields.get("id", "").strip(),
        "description": fields.get("description", "").strip(),
        "tools": chosen,
        "tool_mode": fields.get("tool_mode", "") or TOOL_MODES[0],
    }
    try:
        record = server_record(payload, None, app[PLUGINS])
        check_members(record, app[REGISTRY].catalogue)
        record = await app[STORE].create_server(record)
    except EXPECTED as exc:
        return await _servers_page(current, 422, [failure(exc)], fields)
    await app[REGISTRY].changed()
    return current.redirect("/admin/servers", f"Virtual server '{record.id}' created.")


async def _remove_server(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    server_id = current.request.match_info["server"]
    app = current.request.app
    try:
        if not await app[STORE].delete_server(server_id):
            raise NotFound(f"virtual server '{server_id}' does not exist")
    except EXPECTED as exc:
        return await _servers_page(current, 422, [failure(exc)])
    await app[REGISTRY].changed()
    return current.redirect("/admin/servers", f"Virtual server '{server_id}' removed.")


# --- health --------------------------------------------------------------------------------


async def _health(current: Visit) -> web.StreamResponse:
    app = current.request.app
    catalogue = app[REGISTRY].catalogue
    health = {
        record.name: await read_health(app[LEADER_USE], record.name)
        for record in await app[STORE].list_upstreams()
    }
    upstreams = [{"name": name, "health": found} for name, found in health.items()]
    settings = app[SETTINGS]
    return current.render(
        "health.html",
        version=__version__,
        catalogue={"version": catalogue.version, "tools": len(catalogue.tools)},
        everything={
            "resources": len(catalogue.everything.resources),
            "prompts": len(catalogue.everything.prompts),
        },
        leader=app[LEADER].is_leader,
        cache=settings.cache_type,
        store="postgresql" if settings.is_postgres else "sqlite",
        upstreams=upstreams,
        up=sum(1 for found in health.values() if found is not None and found.get("ok")),
        down=sum(1 for found in health.values() if found is not None and not found.get("ok")),
        metrics=metrics_view.summary(),
    )


@public
async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[ADMIN_UI].stylesheet,
        content_type="text/css",
        headers={"Cache-Control": "max-age=3600"},
    )


async def _ui_ctx(app: web.Application) -> AsyncIterator[None]:
    """The UI's sessions (in the cache, CSRF key from the store) and templates."""
    settings = app[SETTINGS]
    use = CacheUse(app[CACHE], settings.cache_type, "admin-ui", settings.cache_timeout)
    sessions = UiSessions(
        use,
        app[STORE].derived_key(CSRF_KEY_PURPOSE),
        settings.admin_ui_session_ttl,
        secure=settings.public_url.startswith("https://"),
    )
    app[ADMIN_UI] = AdminUi(
        sessions=sessions,
        templates=templates(),
        auth_required=settings.auth_required,
        trusted_origins=trusted_origins(settings),
        stylesheet=(Path(__file__).parent / "static" / "ui.css").read_bytes(),
    )
    yield


def install(app: web.Application) -> None:
    """Mount the UI at `/admin`; its parts are built after every other resource."""
    app.cleanup_ctx.append(_ui_ctx)
    router = app.router
    router.add_get("/admin/static/ui.css", stylesheet)
    router.add_get("/admin", home)
    router.add_get("/admin/", home)
    router.add_get("/admin/signin", open_page(_sign_in_page))
    router.add_post("/admin/signin", form(_sign_in, signed_in=False))
    router.add_post("/admin/signout", form(_sign_out, signed_in=False))
    router.add_get("/admin/upstreams", page(_upstreams))
    router.add_post("/admin/upstreams", form(_add_upstream))
    router.add_post("/admin/upstreams/{name}/refresh", form(_refresh_upstream))
    router.add_post("/admin/upstreams/{name}/remove", form(_remove_upstream))
    tool_pages.add_routes(router)
    router.add_get("/admin/servers", page(_servers))
    router.add_post("/admin/servers", form(_add_server))
    router.add_post("/admin/servers/{server}/remove", form(_remove_server))
    token_pages.add_routes(router)
    router.add_get("/admin/health", page(_health))
