"""Tool curation in the admin API: which fields `PATCH /tools/{name}` curates, how each is
checked, and how a tool shows its curation beside the upstream's values."""

from __future__ import annotations

import re
from typing import Any

from gateway.catalogue import tool_listing
from gateway.naming import TOOL_NAME
from gateway.store import ToolOverride, ToolRecord
from gateway.toolsearch import META_NAMES

CURATED_FIELDS = ("alias", "title", "description", "annotations", "tags")
TITLE_CHARS_MAX = 200
DESCRIPTION_CHARS_MAX = 10_000
TAGS_MAX = 32
TAG = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"'{name}' must be a string of at most {limit} characters, or null")
    return value


def _alias(value: Any) -> str:
    if not isinstance(value, str) or not TOOL_NAME.fullmatch(value):
        raise ValueError(
            "'alias' must be 1-128 characters of letters, digits, '_', '-' and '.', or null"
        )
    if value in META_NAMES:
        raise ValueError(f"'alias' {value!r} is reserved for search-mode virtual servers")
    return value


def _annotations(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'annotations' must be an object of {', '.join(HINTS)}, or null")
    for key, hint in value.items():
        if key == "title":
            _text("annotations.title", hint, TITLE_CHARS_MAX)
        elif key not in HINTS:
            raise ValueError(f"'annotations' has no field {key!r}; use {', '.join(HINTS)}")
        elif not isinstance(hint, bool):
            raise ValueError(f"'annotations.{key}' must be true or false")
    return value


def tags(value: Any, field: str = "tags") -> tuple[str, ...]:
    """A list of tags: at most 32, each 1-64 letters, digits and `_ . : -`."""
    if (
        not isinstance(value, list)
        or len(value) > TAGS_MAX
        or not all(isinstance(t, str) and TAG.fullmatch(t) for t in value)
    ):
        raise ValueError(
            f"'{field}' must be a list of at most {TAGS_MAX} tags, each 1-64 letters, digits "
            "and '_', '.', ':', '-'"
        )
    return tuple(dict.fromkeys(value))


def curation_changes(payload: dict[str, Any]) -> dict[str, Any]:
    """The curated fields of a PATCH body, checked; null clears a field. Raise ValueError."""
    changes: dict[str, Any] = {}
    for name in CURATED_FIELDS:
        if name not in payload:
            continue
        value = payload[name]
        if value is None:
            changes[name] = None
        elif name == "alias":
            changes[name] = _alias(value)
        elif name == "title":
            changes[name] = _text(name, value, TITLE_CHARS_MAX)
        elif name == "description":
            changes[name] = _text(name, value, DESCRIPTION_CHARS_MAX)
        elif name == "annotations":
            changes[name] = _annotations(value)
        else:
            changes[name] = tags(value)
    return changes


def curation_view(record: ToolRecord, override: ToolOverride | None) -> dict[str, Any]:
    """What the operator curated (null where the upstream's value stands) and what agents
    see: `listed`, the tool as tools/list shows it, without its schemas."""
    curated = override or ToolOverride(name=record.name)
    listed = tool_listing(record, override)
    listed.pop("inputSchema", None)
    listed.pop("outputSchema", None)
    return {
        "curation": {
            "alias": curated.alias,
            "title": curated.title,
            "description": curated.description,
            "annotations": curated.annotations,
            "tags": list(curated.tags),
        },
        "listed": listed,
    }
