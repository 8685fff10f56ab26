"""The configuration file at start: `GATEWAY_CONFIG` applied as desired state once per
start of an instance (gunicorn master) and file, by the first worker to take the lease; a
problem stops the start with one line."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway.config.apply import Applier, apply_at_start
from gateway.config.document import ConfigError
from gateway.keys import REGISTRY, SETTINGS, STORE, UPSTREAMS
from gateway.settings import SettingsError


def _marker(path: str) -> str:
    """What names this start: the host, the gunicorn master (a worker's parent) and the
    file's current bytes. A worker that gunicorn starts later (a crash,
    `GUNICORN_MAX_REQUESTS`) finds its record and does not apply the file again, so a
    change made through the admin API since is not undone at a random moment; a reload
    (SIGHUP) with a changed file applies the new one, and so does the next start."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        raw = b""
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return f"{socket.gethostname()}:{os.getppid()}:{digest}"


async def config_ctx(app: web.Application) -> AsyncIterator[None]:
    """Apply `GATEWAY_CONFIG`, if set and not yet applied by this instance, before the
    worker serves."""
    settings = app[SETTINGS]
    path = settings.config_file
    if path:
        store = app[STORE]
        applier = Applier(store, app[UPSTREAMS], app[REGISTRY])
        # `${VAR}` references name variables of the gateway's own environment.
        environ = dict(os.environ)
        marker = await asyncio.to_thread(_marker, path)
        try:
            await apply_at_start(
                path, environ, applier, store, settings.gunicorn_timeout / 2, marker
            )
        except ConfigError as exc:
            raise SettingsError(f"GATEWAY_CONFIG: {exc}") from None
    yield
