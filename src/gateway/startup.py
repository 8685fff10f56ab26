"""Start-up warnings: settings that work but that an operator should hear about, once.

They are said by the process that stands for the whole server (gunicorn's master, or
`aio-mcp-gateway serve`), not by every worker it starts.
"""

from __future__ import annotations

import structlog

from gateway.keyfile import ENCRYPTION_KEY_FILE, secrets_dir
from gateway.plugins import Plugins
from gateway.settings import Settings

log = structlog.get_logger(__name__)


def startup_warnings(settings: Settings, plugins: Plugins, workers: int = 1) -> list[str]:
    """One line per risky setting, for a server of `workers` worker processes."""
    warnings: list[str] = []
    if not settings.auth_required:
        warnings.append("AUTH_REQUIRED=false: every request is anonymous and the admin API is open")
    if not settings.auth_encryption_secret:
        warnings.append(
            "AUTH_ENCRYPTION_SECRET is not set; upstream credentials are encrypted "
            f"with the key in {secrets_dir(settings) / ENCRYPTION_KEY_FILE}"
        )
    cache = plugins.cache_for(settings)
    if not cache.shared and workers > 1:
        warnings.append(
            f"CACHE_TYPE={cache.name} lives in each worker: with {workers} workers, cached "
            "results, rate limits, sessions and leader election are per worker, and catalogue "
            "changes reach other workers only through the store poll "
            "(CATALOGUE_POLL_INTERVAL). Use CACHE_TYPE=database or redis to share them."
        )
    return warnings


def log_startup_warnings(settings: Settings) -> None:
    """For a server that is one process; logging must be configured already."""
    for warning in startup_warnings(settings, Plugins.load(settings)):
        log.warning(warning)
