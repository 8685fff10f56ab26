"""Credentials written into an upstream URL (`user:password@`), moved to the
`Authorization: Basic` header an HTTP client would send for them: headers are encrypted at
rest and never shown, a URL is neither."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit


def credentials_out_of_url(
    url: str, headers: Mapping[str, str]
) -> tuple[str, dict[str, str]] | None:
    """The URL without its userinfo and the headers with that userinfo as their
    `Authorization`; None when the URL holds no credentials."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    basic = base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
    kept = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, {**kept, "Authorization": f"Basic {basic}"}
