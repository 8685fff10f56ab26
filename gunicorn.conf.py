"""gunicorn configuration for aio-mcp-gateway: `gunicorn -c gunicorn.conf.py`.

Every knob comes from the gateway's settings (environment, then `.env`); see `.env.example`.
A bad setting stops here, in the master, with one line.
"""

from __future__ import annotations

import sys

from gateway import metrics_files

# Before anything imports prometheus_client, which reads the directory at import: every
# worker (forked from here) then counts into it, and /metrics on any of them sums them all.
try:
    metrics_files.prepare()
except metrics_files.MetricsDirError as _exc:
    print(f"aio-mcp-gateway: configuration error: {_exc}", file=sys.stderr, flush=True)
    sys.exit(2)

from gateway.config.document import check_file
from gateway.eventloop import worker_class as _worker_class
from gateway.logconfig import logging_dict
from gateway.plugins import Plugins
from gateway.settings import SettingsError, load_settings
from gateway.startup import startup_warnings

try:
    _settings = load_settings()
    _plugins = Plugins.load(_settings)
    _plugins.check(_settings)
    # GATEWAY_CONFIG is read and checked here, once; the first worker to start applies it.
    check_file(_settings)
    _worker = _worker_class(_settings)
except SettingsError as _exc:
    for _problem in _exc.problems:
        print(f"aio-mcp-gateway: configuration error: {_problem}", file=sys.stderr, flush=True)
    sys.exit(2)

wsgi_app = "gateway.app:create_app"
# EVENT_LOOP: uvloop (when installed, the default) serves the same requests with less CPU
# per request than asyncio's own loop; EVENT_LOOP=asyncio turns it off.
worker_class = _worker

bind = [
    f"[{_settings.host}]:{_settings.port}"
    if ":" in _settings.host
    else f"{_settings.host}:{_settings.port}"
]

# GUNICORN_WORKERS: each worker is one event loop on one core. The gateway mostly waits on
# upstreams, so 2 per core is a good start (the default); go lower if upstream calls are
# CPU-light and memory is tight, higher only after measuring.
workers = _settings.gunicorn_workers

# GUNICORN_TIMEOUT: seconds a worker may stay silent before the master kills it. An asyncio
# worker heartbeats while it waits on I/O, so this only catches a blocked loop; keep it well
# above TOOL_TIMEOUT.
timeout = _settings.gunicorn_timeout

# GUNICORN_GRACEFUL_TIMEOUT: seconds to finish in-flight calls on restart or SIGTERM. Set it
# to the longest tool call you want to survive a deploy (aiohttp uses 95% of it).
graceful_timeout = _settings.gunicorn_graceful_timeout

# GUNICORN_KEEPALIVE: seconds an idle client connection stays open. Behind a load balancer,
# make it longer than the balancer's idle timeout so the balancer closes first.
keepalive = _settings.gunicorn_keepalive

# GUNICORN_MAX_REQUESTS (+ _JITTER): recycle a worker after this many requests, to bound slow
# leaks; the jitter keeps workers from restarting together. 0 disables recycling.
max_requests = _settings.gunicorn_max_requests
max_requests_jitter = _settings.gunicorn_max_requests_jitter

# GUNICORN_PRELOAD_APP: import the gateway once in the master, so workers fork with the code
# already loaded (faster boots, shared memory). Connections are still opened per worker.
preload_app = _settings.gunicorn_preload_app

# GUNICORN_BACKLOG: pending connections the kernel queues; raise it for bursty load.
backlog = _settings.gunicorn_backlog

# GUNICORN_ACCESS_LOG: one structured line per request. Off by default because at thousands
# of requests per second the log itself becomes the bottleneck.
accesslog = "-" if _settings.gunicorn_access_log else None
# aiohttp's own format directives (gunicorn's %(h)s style is rejected by the aiohttp worker).
access_log_format = '%a "%r" %s %b %Tf "%{User-Agent}i"'

# gunicorn's control socket has one fixed path per user: several instances on one host
# would overwrite each other's, so it stays off.
control_socket_disable = True

# One structured output for gunicorn, aiohttp and the gateway.
logconfig_dict = logging_dict(_settings)
loglevel = _settings.log_level


def on_starting(server: object) -> None:
    """Say the start-up warnings once for the whole server, not once per worker."""
    for warning in startup_warnings(_settings, _plugins, workers):
        server.log.warning(warning)  # type: ignore[attr-defined]


def child_exit(server: object, worker: object) -> None:
    """Retire a dead worker's metric files: its gauges go, its counts stay in the totals."""
    metrics_files.retire(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    """Delete the metrics directory the gateway made for this server."""
    metrics_files.remove()
