"""The application factory, and the gunicorn target: `gateway.app:create_app`.

Every long-lived part is built here, by the `cleanup_ctx` entries of `RESOURCES`, in the
order they are listed: store, cache (and what lives in it), this worker's membership of the
cluster (which writes wait on), authenticator, hub, registry (with the backends), per-client
upstream sessions, upstream management (with the notifier and the leader's jobs), the
configuration file (`GATEWAY_CONFIG`, applied once), the era bridge (2026 calls that outlive
their request), the interceptors, and the dispatcher. Each is handed what it needs; teardown
runs in reverse.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from gateway import (
    access,
    admin,
    expectations,
    health,
    heap,
    hosts,
    jobs,
    metrics,
    roles_api,
    rpc,
    servers,
)
from gateway.authsecret import jwt_secret
from gateway.cacheuse import CacheUse
from gateway.config.startup import config_ctx
from gateway.consistency import Consistency
from gateway.contracts import AuthError, Challenging, Principal
from gateway.keyfile import secrets_dir
from gateway.keys import (
    AUTHENTICATOR,
    BRIDGE,
    CACHE,
    CONSISTENCY,
    DISPATCHER,
    EVENTS,
    HUB,
    INTERCEPTORS,
    LEADER,
    LEADER_USE,
    LIMITS,
    NOTIFIER,
    PLUGINS,
    REGISTRY,
    RESULTS,
    ROLES,
    SESSIONS,
    SETTINGS,
    STORE,
    STREAM_QUOTA,
    TASKS,
    TRACING,
    UPSTREAM_SESSIONS,
    UPSTREAMS,
)
from gateway.leader import LeaderElection
from gateway.limits import RateLimiter
from gateway.logconfig import configure_logging
from gateway.mcp import legacy_sse, streamable
from gateway.mcp.asks import ClientAsks
from gateway.mcp.bridge import Bridge
from gateway.mcp.dispatch import Dispatcher
from gateway.mcp.hub import Hub
from gateway.mcp.inflight import InFlight
from gateway.mcp.interception import Interceptors
from gateway.mcp.methods import Methods
from gateway.mcp.notifications import Notifier
from gateway.mcp.request_state import KEY_PURPOSE, Sealer
from gateway.mcp.stream_quota import StreamQuota
from gateway.mcp.streams import EventLog
from gateway.mcp.upstream_calls import UpstreamCalls
from gateway.middlewares import front_door
from gateway.plugins import Plugins
from gateway.registry import Registry
from gateway.results import ResultCache
from gateway.role_book import RoleBook
from gateway.sessions import SessionStore
from gateway.settings import Settings, SettingsError, load_settings
from gateway.store import StoreError, open_store
from gateway.tasks import BackgroundTasks
from gateway.tracing import wanted as tracing_wanted
from gateway.tracing_setup import server_spans, span_ids_in_logs, tracing_ctx
from gateway.ui import routes as ui_routes
from gateway.upstream_sessions import UpstreamSessions
from gateway.upstreams import UpstreamService

log = structlog.get_logger(__name__)

Ctx = Callable[[web.Application], AsyncIterator[None]]


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = open_store(
        settings.database_url, settings.auth_encryption_secret, secrets_dir(settings)
    )
    try:
        await store.start()
    except StoreError as exc:
        raise StartupError(f"cannot open the store at DATABASE_URL: {exc}") from None
    app[STORE] = store
    yield
    await store.close()


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cache, and what lives in it: results, rate limits, sessions, events, leases."""
    settings = app[SETTINGS]
    spec = app[PLUGINS].cache_for(settings)
    cache = spec.factory(settings, app[STORE])
    try:
        await cache.start()
    except Exception as exc:
        raise StartupError(f"cannot start the {spec.name!r} cache (CACHE_TYPE): {exc}") from None
    app[CACHE] = cache

    def use(name: str) -> CacheUse:
        return CacheUse(cache, settings.cache_type, name, settings.cache_timeout)

    app[RESULTS] = ResultCache(use("results"))
    app[LIMITS] = RateLimiter(use("limits"))
    app[SESSIONS] = SessionStore(
        use("sessions"), settings.session_ttl, settings.max_sessions_per_subject
    )
    app[EVENTS] = EventLog(use("events"))
    app[LEADER_USE] = use("leader")
    yield
    await cache.close()


async def _consistency_ctx(app: web.Application) -> AsyncIterator[None]:
    """This worker's membership of the cluster, which admin writes and ended sessions
    wait on until every worker has applied them."""
    settings = app[SETTINGS]
    use = CacheUse(app[CACHE], settings.cache_type, "consistency", settings.cache_timeout)
    shared = app[PLUGINS].cache_for(settings).shared
    consistency = Consistency(use, settings.consistency_timeout, shared)
    await consistency.start()
    app[CONSISTENCY] = consistency
    yield
    await consistency.close()


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.auth_required:
        yield
        return
    spec = app[PLUGINS].auth_for(settings)
    secret = await jwt_secret(settings, app[STORE])
    authenticator = spec.factory(settings, secret)
    await authenticator.start()
    app[AUTHENTICATOR] = authenticator
    yield
    await authenticator.close()


async def _roles_ctx(app: web.Application) -> AsyncIterator[None]:
    """The roles in force, reloaded with the catalogue (see `_registry_ctx`), and what
    they grant on admin routes."""
    roles = RoleBook(app[STORE], app[SETTINGS])
    await roles.start()
    app[ROLES] = roles
    app[access.ADMINISTERS] = roles.administers
    yield


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """Where messages for clients meet the streams that carry them, across workers."""
    hub = Hub(app[CACHE], app[SESSIONS], app[CONSISTENCY])
    await hub.start()
    app[HUB] = hub
    settings = app[SETTINGS]
    app[STREAM_QUOTA] = StreamQuota(
        settings.max_streams_per_session, settings.max_streams_per_subject, settings.max_streams
    )
    yield
    await hub.close()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    """The catalogue and backends; catalogue changes go to the hub's streams."""
    settings = app[SETTINGS]
    registry = Registry(
        settings,
        app[PLUGINS],
        app[STORE],
        app[CACHE],
        on_change=app[ROLES].following(app[HUB].catalogue_changed),
        consistency=app[CONSISTENCY],
    )
    await registry.start()
    app[REGISTRY] = registry
    yield
    await registry.close()


async def _upstream_sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upstream sessions of per-client upstreams, ended with their client sessions."""
    settings = app[SETTINGS]
    use = CacheUse(app[CACHE], settings.cache_type, "upstream-sessions", settings.cache_timeout)
    pool = UpstreamSessions(settings, app[PLUGINS], app[REGISTRY], app[SESSIONS], use)
    app[HUB].session_listeners.append(pool.session_ended)
    await pool.start()
    app[UPSTREAM_SESSIONS] = pool
    yield
    await pool.close()


async def _upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
    """Upstream management, the notifier acting on upstreams' own notifications, and the
    leader's periodic jobs (health checks, refreshes)."""
    settings = app[SETTINGS]
    registry = app[REGISTRY]
    upstreams = UpstreamService(settings, app[PLUGINS], app[STORE], registry)
    await upstreams.sync_local_backends()
    app[UPSTREAMS] = upstreams
    notifier = Notifier(app[HUB], registry.notes, upstreams.refresh, app[LEADER_USE])
    await notifier.start()
    app[NOTIFIER] = notifier
    election = LeaderElection(app[LEADER_USE], settings.leader_ttl)
    jobs.schedule(election, registry, upstreams, app[LEADER_USE], settings)
    await election.start()
    app[LEADER] = election
    yield
    await election.close()
    await notifier.close()


async def _bridge_ctx(app: web.Application) -> AsyncIterator[None]:
    """The 2026 calls that outlive their request while the client answers the upstream,
    and the key, shared by every instance, that seals their `requestState`."""
    settings = app[SETTINGS]
    key = app[STORE].derived_key(KEY_PURPOSE)
    use = CacheUse(app[CACHE], settings.cache_type, "bridge", settings.cache_timeout)
    bridge = Bridge(app[HUB], use, Sealer(key), settings.tool_timeout, settings.bridged_calls_max)
    app[BRIDGE] = bridge
    yield
    await bridge.close()


async def _interceptors_ctx(app: web.Application) -> AsyncIterator[None]:
    """Every installed interceptor, started once; the chains `INTERCEPTORS` and the virtual
    servers choose are resolved from them."""
    interceptors = Interceptors(app[PLUGINS].interceptors.items, app[SETTINGS])
    await interceptors.start()
    app[INTERCEPTORS] = interceptors
    yield
    await interceptors.close()


async def _dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one dispatcher every transport calls, and the tasks transports leave running."""
    settings = app[SETTINGS]
    asks_use = CacheUse(app[CACHE], settings.cache_type, "asks", settings.cache_timeout)
    asks = ClientAsks(app[HUB], asks_use, settings.tool_timeout)
    calls = UpstreamCalls(
        settings,
        app[REGISTRY],
        app[RESULTS],
        app[LIMITS],
        asks,
        app[UPSTREAM_SESSIONS],
        app[BRIDGE],
        app[INTERCEPTORS],
        app.get(TRACING),
    )
    methods = Methods(app[REGISTRY], app[SESSIONS], calls, app[HUB].session_changed)
    app[DISPATCHER] = Dispatcher(
        methods,
        app[LIMITS],
        settings.rate_limit_per_minute,
        app[HUB],
        asks,
        app[BRIDGE],
        InFlight(
            settings.max_inflight_per_session,
            settings.max_inflight_per_subject,
            settings.max_inflight,
        ),
        app.get(TRACING),
    )
    tasks = BackgroundTasks()
    app[TASKS] = tasks
    yield
    await tasks.close()


RESOURCES: tuple[Ctx, ...] = (
    tracing_ctx,
    _store_ctx,
    _cache_ctx,
    _consistency_ctx,
    _auth_ctx,
    _roles_ctx,
    _hub_ctx,
    _registry_ctx,
    _upstream_sessions_ctx,
    _upstreams_ctx,
    config_ctx,
    _bridge_ctx,
    _interceptors_ctx,
    _dispatch_ctx,
)
"""Every long-lived part, in the order it is built; teardown runs in reverse."""


async def _authenticate(request: web.Request) -> Principal:
    return await request.app[AUTHENTICATOR].authenticate(request)


def _challenge(request: web.Request, error: AuthError) -> str | None:
    authenticator = request.app.get(AUTHENTICATOR)
    if isinstance(authenticator, Challenging):
        return authenticator.challenge(request, error)
    return None


async def _end_streams(app: web.Application) -> None:
    """Close client streams first, so shutdown need not wait for clients to leave."""
    await app[HUB].close_streams()


def build_app(
    settings: Settings, plugins: Plugins, guard: Callable[[Ctx], Ctx] = lambda ctx: ctx
) -> web.Application:
    """Assemble the application without starting anything; `guard` wraps each resource."""
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        # A client that hangs up cancels its request: upstream calls stop, streams close.
        handler_args={"handler_cancellation": True},
        middlewares=[
            *([server_spans()] if tracing_wanted(settings) else []),
            front_door(
                access.gatekeeper(
                    _authenticate if settings.auth_required else None,
                    hosts.screen(settings),
                    _challenge,
                ),
                access_log=settings.access_log == "json",
            ),
            *([span_ids_in_logs()] if tracing_wanted(settings) else []),
        ],
    )
    app[SETTINGS] = settings
    app[PLUGINS] = plugins
    app.cleanup_ctx.extend(guard(ctx) for ctx in RESOURCES)
    app.on_shutdown.append(_end_streams)
    app.router.add_routes(rpc.routes)
    app.router.add_routes(streamable.routes)
    app.router.add_routes(legacy_sse.routes)
    health.install(app)
    admin.install(app)
    servers.install(app)
    roles_api.install(app)
    metrics.install(app)
    if settings.admin_ui:
        ui_routes.install(app)
    plugins.configure_app(app, settings)
    # Every route, the plugins' included: an `Expect` other than 100-continue is a JSON 417.
    expectations.install(app)
    return app


async def create_app(settings: Settings | None = None) -> web.Application:
    """The gunicorn and `serve` entry: read settings, configure logging, build the app.

    A configuration error is one clear line and exit status 3, which gunicorn treats as
    a boot failure (it stops instead of respawning workers).
    """
    try:
        settings = settings or load_settings()
        configure_logging(settings)
        plugins = Plugins.load(settings)
        plugins.check(settings)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"aio-mcp-gateway: configuration error: {problem}", file=sys.stderr, flush=True)
        sys.exit(3)
    app = build_app(settings, plugins, guard=_exit_on_startup_error)
    app.on_startup.append(_log_started)
    heap.install(app, settings)
    return app


def _exit_on_startup_error(ctx: Ctx) -> Ctx:
    """Turn a `StartupError` into one log line and exit status 3, not a traceback."""

    async def guarded(app: web.Application) -> AsyncIterator[None]:
        steps = ctx(app)
        try:
            await steps.__anext__()
        except (StartupError, SettingsError) as exc:
            log.error(str(exc))
            # Close what earlier steps opened (the store's threads would keep the worker
            # alive), then exit with gunicorn's boot-error status so the master stops.
            with contextlib.suppress(Exception):
                await app.cleanup()
            raise SystemExit(3) from None
        yield
        with contextlib.suppress(StopAsyncIteration):
            await steps.__anext__()

    return guarded


async def _log_started(app: web.Application) -> None:
    settings = app[SETTINGS]
    log.info(
        "gateway started",
        cache=settings.cache_type,
        auth=settings.auth_type if settings.auth_required else "none",
        store="postgresql" if settings.is_postgres else "sqlite",
    )
