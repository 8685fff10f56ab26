"""What the admin UI keeps on the application (under `keys.ADMIN_UI`)."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from gateway.ui.session import UiSessions


@dataclass(frozen=True, slots=True)
class AdminUi:
    """The UI's parts: its sessions and its templates (autoescaped)."""

    sessions: UiSessions
    templates: jinja2.Environment
    auth_required: bool
    trusted_origins: frozenset[str]
    """Origins a form may come from besides the request's own (PUBLIC_URL, ALLOWED_ORIGINS)."""
    stylesheet: bytes
