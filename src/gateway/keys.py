"""The typed keys under which the application keeps its state. Nothing else lives here."""

from __future__ import annotations

from aiohttp import web

from gateway.cacheuse import CacheUse
from gateway.consistency import Consistency
from gateway.contracts import Authenticator, Cache, ManagedTokens
from gateway.leader import LeaderElection
from gateway.limits import RateLimiter
from gateway.mcp.bridge import Bridge
from gateway.mcp.dispatch import Dispatcher
from gateway.mcp.hub import Hub
from gateway.mcp.interception import Interceptors
from gateway.mcp.notifications import Notifier
from gateway.mcp.stream_quota import StreamQuota
from gateway.mcp.streams import EventLog
from gateway.plugins import Plugins
from gateway.registry import Registry
from gateway.results import ResultCache
from gateway.role_book import RoleBook
from gateway.sessions import SessionStore
from gateway.settings import Settings
from gateway.store import Store
from gateway.tasks import BackgroundTasks
from gateway.tracing import Tracing
from gateway.ui.state import AdminUi
from gateway.upstream_sessions import UpstreamSessions
from gateway.upstreams import UpstreamService

SETTINGS = web.AppKey("settings", Settings)
PLUGINS = web.AppKey("plugins", Plugins)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("cache", Cache)
CONSISTENCY = web.AppKey("consistency", Consistency)
RESULTS = web.AppKey("results", ResultCache)
LIMITS = web.AppKey("limits", RateLimiter)
SESSIONS = web.AppKey("sessions", SessionStore)
LEADER_USE = web.AppKey("leader_use", CacheUse)
EVENTS = web.AppKey("events", EventLog)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
HUB = web.AppKey("hub", Hub)
STREAM_QUOTA = web.AppKey("stream_quota", StreamQuota)
REGISTRY = web.AppKey("registry", Registry)
ROLES = web.AppKey("roles", RoleBook)
UPSTREAMS = web.AppKey("upstreams", UpstreamService)
UPSTREAM_SESSIONS = web.AppKey("upstream_sessions", UpstreamSessions)
NOTIFIER = web.AppKey("notifier", Notifier)
LEADER = web.AppKey("leader", LeaderElection)
BRIDGE = web.AppKey("bridge", Bridge)
INTERCEPTORS = web.AppKey("interceptors", Interceptors)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
TASKS = web.AppKey("tasks", BackgroundTasks)
ADMIN_UI = web.AppKey("admin_ui", AdminUi)
MANAGED_TOKENS = web.AppKey("managed_tokens", ManagedTokens)
TRACING = web.AppKey("tracing", Tracing)
