"""The typed keys under which the application keeps its state. Nothing else lives here."""

from __future__ import annotations

from aiohttp import web

from gateway.cacheuse import CacheUse
from gateway.contracts import Authenticator, Cache
from gateway.leader import LeaderElection
from gateway.limits import RateLimiter
from gateway.plugins import Plugins
from gateway.registry import Registry
from gateway.results import ResultCache
from gateway.sessions import SessionStore
from gateway.settings import Settings
from gateway.store import Store
from gateway.upstreams import UpstreamService

SETTINGS = web.AppKey("settings", Settings)
PLUGINS = web.AppKey("plugins", Plugins)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("cache", Cache)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
REGISTRY = web.AppKey("registry", Registry)
UPSTREAMS = web.AppKey("upstreams", UpstreamService)
RESULTS = web.AppKey("results", ResultCache)
LIMITS = web.AppKey("limits", RateLimiter)
LEADER = web.AppKey("leader", LeaderElection)
SESSIONS = web.AppKey("sessions", SessionStore)
LEADER_USE = web.AppKey("leader_use", CacheUse)
