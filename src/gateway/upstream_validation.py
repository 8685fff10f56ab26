"""Checking an upstream's registration: a `POST /upstreams` body, or a `PATCH` body over
the stored record, becomes the `UpstreamRecord` to store, or `InvalidUpstream` (422) says
what is wrong. Nothing here contacts the upstream; `gateway.upstreams` does that."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway import upstream_oauth
from gateway.contracts import JSON, BackendSpec
from gateway.naming import PREFIX, UPSTREAM_NAME
from gateway.plugins import Plugins
from gateway.registry import backend_config
from gateway.settings import Settings
from gateway.store import PER_CLIENT_SESSION, SESSION_MODES, UpstreamRecord
from gateway.upstream_sessions import adoptable
from gateway.urlcredentials import credentials_out_of_url


class InvalidUpstream(ValueError):
    """The request to register or change an upstream is not acceptable (422)."""


_FIELDS = {"name", "url", "transport", "headers", "prefix", "session"}
_PATCHABLE = {"url", "transport", "headers", "prefix", "session"}


def _string(payload: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise InvalidUpstream(f"'{key}' must be a string")
    return value


def _session(payload: Mapping[str, Any], default: str) -> str:
    value = payload.get("session", default)
    if value not in SESSION_MODES:
        raise InvalidUpstream(f"'session' must be one of: {', '.join(SESSION_MODES)}")
    return str(value)


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidUpstream("'headers' must be an object of string values")
    for name, value in headers.items():
        _check_header(name, value)
    return headers


# RFC 9110 section 5.1: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Hop-by-hop fields (RFC 9110 section 7.6.1) describe one connection, and Host and
# Content-Length describe the request the client builds: an override would split or
# misroute the request.
_REFUSED = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _check_header(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise InvalidUpstream(f"header {name!r}: a field name must be an RFC 9110 token")
    if any(c in value for c in "\r\n\0"):
        raise InvalidUpstream(f"header {name!r}: the value must not contain CR, LF or NUL")
    lowered = name.lower()
    if lowered in _REFUSED or lowered.startswith("proxy-"):
        raise InvalidUpstream(
            f"header {name!r} is set by the gateway's client for each connection and "
            "cannot be given for an upstream"
        )


def upstream_record(
    payload: Mapping[str, Any],
    current: UpstreamRecord | None,
    plugins: Plugins,
    settings: Settings,
) -> UpstreamRecord:
    """The record a `POST /upstreams` body (`current` None) or a `PATCH` body over `current`
    makes, checked without contacting the upstream; raise `InvalidUpstream`."""
    now = time.time()
    if current is None:
        name = _string(payload, "name")
        if not UPSTREAM_NAME.fullmatch(name):
            raise InvalidUpstream("'name' must be 1-64 characters of letters, digits, '_' and '-'")
        base = UpstreamRecord(
            name=name, transport="streamable-http", url="", prefix=name, created_at=now
        )
    else:
        if current.builtin:
            raise InvalidUpstream(f"upstream '{current.name}' is built in and cannot change")
        base = current
    try:
        payload, oauth_secret = upstream_oauth.take_secret(payload)
    except ValueError as exc:
        raise InvalidUpstream(str(exc)) from None
    transport = _string(payload, "transport", base.transport)
    spec = plugins.backend_for(transport)
    if spec is None or spec.local:
        raise InvalidUpstream(
            f"'transport' {transport!r} is not served by an installed backend; "
            f"use one of: {', '.join(plugins.transports())}"
        )
    unknown = set(payload) - (_PATCHABLE if current else _FIELDS) - spec.fields
    if unknown:
        raise InvalidUpstream(f"unknown field(s): {', '.join(sorted(unknown))}")
    url = _string(payload, "url", base.url)
    record = replace(
        base,
        transport=transport,
        options=_options(spec, payload, base, url, settings),
        url=url,
        prefix=_string(payload, "prefix", base.prefix),
        headers=_secrets(spec, payload, base)
        if spec.secrets_field is not None
        else (_headers(payload) if "headers" in payload else base.headers),
        session=_session(payload, base.session),
        updated_at=now,
    )
    record = _credentials_out_of_url(record)
    if spec.secrets_field is None:
        try:
            headers = upstream_oauth.with_secret(
                record.headers, base.headers, oauth_secret, record.options
            )
        except ValueError as exc:
            raise InvalidUpstream(str(exc)) from None
        record = replace(record, headers=headers)
    if spec.secrets_field is not None:
        # Their names are no secret: shown with the options.
        options = {**record.options, spec.secrets_field: sorted(record.headers)}
        record = replace(record, options=options)
    if record.session == PER_CLIENT_SESSION and not adoptable(
        spec.factory(backend_config(record), settings)
    ):
        raise InvalidUpstream(
            f"'session': 'per-client' needs a transport whose sessions every worker can "
            f"resume by id, such as streamable-http; {record.transport!r} ties a session "
            "to one connection held by one worker, so use 'shared' with it"
        )
    try:
        upstream_oauth.check_session(record.options, record.session, spec.sessionless)
    except ValueError as exc:
        raise InvalidUpstream(str(exc)) from None
    if (spec.needs_url or record.url) and not record.url.startswith(("http://", "https://")):
        raise InvalidUpstream("'url' must be an http:// or https:// URL")
    if not PREFIX.fullmatch(record.prefix):
        raise InvalidUpstream("'prefix' must be up to 64 characters of letters, digits, _ - .")
    return record


def _options(
    spec: BackendSpec,
    payload: Mapping[str, Any],
    base: UpstreamRecord,
    url: str,
    settings: Settings,
) -> JSON:
    """The transport's own fields: those given over those stored (when the transport stays),
    a null removing one, as the backend's `check_options` accepts them."""
    stored = base.options if base.transport == spec.transport else {}
    given = {key: payload[key] for key in spec.fields if key in payload}
    merged = {
        k: v for k, v in {**stored, **given}.items() if v is not None and k != spec.secrets_field
    }
    if spec.check_options is None:
        return merged
    try:
        return spec.check_options(merged, url, settings)
    except ValueError as exc:
        raise InvalidUpstream(str(exc)) from None


def _secrets(spec: BackendSpec, payload: Mapping[str, Any], base: UpstreamRecord) -> dict[str, str]:
    """The values of the transport's `secrets_field`, kept where headers are: given, else as
    stored while the transport stays. A NUL cannot pass to a process or a header."""
    field = str(spec.secrets_field)
    if "headers" in payload:
        raise InvalidUpstream(f"transport {spec.transport!r} takes no 'headers'; use '{field}'")
    if field not in payload:
        return dict(base.headers) if base.transport == spec.transport else {}
    values = payload[field] or {}
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise InvalidUpstream(f"'{field}' must be an object of string values")
    for name, value in values.items():
        if not name or "=" in name or "\0" in name + value:
            raise InvalidUpstream(
                f"'{field}' {name!r}: a name is not empty and holds no '=', and neither holds a NUL"
            )
    return dict(values)


def _credentials_out_of_url(record: UpstreamRecord) -> UpstreamRecord:
    """`user:password@` in a URL becomes the `Authorization: Basic` header an HTTP client
    would send for it, so it is encrypted at rest and never shown, like any header."""
    moved = credentials_out_of_url(record.url, record.headers)
    if moved is None:
        return record
    url, headers = moved
    return replace(record, url=url, headers=headers)
