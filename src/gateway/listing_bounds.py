"""Bounds on the `icons`, the `_meta` and the extra fields (those the gateway does not model)
an upstream lists with its tools, resources, resource templates and prompts. The gateway
relays them as they are, but every worker holds them in its catalogue and every listing page
carries them, so at discovery:

- an icon whose `src` has control characters (which no URI has) is dropped;
- an entry's icons are kept in order while they take up to `ICONS_BYTES_MAX` of JSON
  together, and the rest are dropped;
- a `_meta` of more than `META_BYTES_MAX` of JSON is dropped whole;
- extra fields of more than `EXTRA_BYTES_MAX` of JSON together are dropped whole.

Each listing that loses something is named in one warning, with the entries concerned.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TypeVar

import orjson
import structlog

from gateway.contracts import JSON, PromptDef, ResourceDef, ResourceTemplateDef, ToolDef

log = structlog.get_logger(__name__)

ICONS_BYTES_MAX = 32_768
"""The most JSON one entry's icons take together: room for a few small `data:` images.
With the other two, a page of 100 entries carries at most 9.8 MB of the three."""
META_BYTES_MAX = 32_768
"""The most JSON one entry's `_meta` takes."""
EXTRA_BYTES_MAX = 32_768
"""The most JSON one entry's extra fields take together (as one object)."""
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
"""Characters no URI has (RFC 3986), which PostgreSQL cannot store, for NUL."""
SHOWN_ENTRIES = 10
"""How many of a listing's trimmed entries a warning names."""

D = TypeVar("D", ToolDef, ResourceDef, ResourceTemplateDef, PromptDef)
"""Any one kind of listing entry (`contracts.Definition` is their union)."""


def _json_bytes(value: object) -> int:
    return len(orjson.dumps(value))


def fitting_icons(icons: tuple[JSON, ...]) -> tuple[JSON, ...]:
    """The icons kept: those with a clean `src`, in order, while they fit together."""
    kept: list[JSON] = []
    room = ICONS_BYTES_MAX
    for icon in icons:
        if CONTROL.search(str(icon.get("src", ""))):
            continue
        size = _json_bytes(icon)
        if size > room:
            continue
        kept.append(icon)
        room -= size
    return tuple(kept)


def _fitting(value: JSON | None, limit: int) -> JSON | None:
    """The object kept: all of it, or none when its JSON takes more than `limit`."""
    if value is None or _json_bytes(value) <= limit:
        return value
    return None


def fitting_meta(meta: JSON | None) -> JSON | None:
    """The `_meta` kept: all of it, or none when it is too large."""
    return _fitting(meta, META_BYTES_MAX)


def fitting_extra(extra: JSON | None) -> JSON | None:
    """The extra fields kept: all of them, or none when together they are too large."""
    return _fitting(extra, EXTRA_BYTES_MAX)


def _identity(definition: ToolDef | ResourceDef | ResourceTemplateDef | PromptDef) -> str:
    if isinstance(definition, ResourceDef):
        return definition.uri
    if isinstance(definition, ResourceTemplateDef):
        return definition.uri_template
    return definition.name


def bounded(upstream: str, kind: str, definitions: list[D]) -> list[D]:
    """`definitions` with their icons, `_meta` and extra fields within bounds; a warning
    names the `kind` entries of `upstream` that lost some."""
    kept: list[D] = []
    trimmed: list[str] = []
    dropped_icons = dropped_meta = dropped_extra = 0
    for definition in definitions:
        icons = fitting_icons(definition.icons)
        meta = fitting_meta(definition.meta)
        extra = fitting_extra(definition.extra)
        if (
            icons != definition.icons
            or meta is not definition.meta
            or extra is not definition.extra
        ):
            dropped_icons += len(definition.icons) - len(icons)
            dropped_meta += meta is not definition.meta
            dropped_extra += extra is not definition.extra
            trimmed.append(_identity(definition))
            definition = replace(definition, icons=icons, meta=meta, extra=extra)
        kept.append(definition)
    if trimmed:
        log.warning(
            "upstream listing trimmed: icons with control characters or past their size, "
            "or _meta or extra fields past their size, are not relayed",
            upstream=upstream,
            kind=kind,
            entries=trimmed[:SHOWN_ENTRIES],
            trimmed=len(trimmed),
            dropped_icons=dropped_icons,
            dropped_meta=dropped_meta,
            dropped_extra=dropped_extra,
            icons_bytes_max=ICONS_BYTES_MAX,
            meta_bytes_max=META_BYTES_MAX,
            extra_bytes_max=EXTRA_BYTES_MAX,
        )
    return kept
