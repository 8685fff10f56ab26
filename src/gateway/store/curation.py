"""Writing tool curation: the operator's alias, title, description, annotations and tags of a
tool, kept in `tool_overrides` by gateway name, apart from what its upstream says."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from gateway.store import Conflict, Connection, NotFound, ToolOverride
from gateway.store.connections import BUMP_VERSION, DuplicateKey, SQLBase
from gateway.store.tables import OVERRIDES

CURATED = frozenset(f.name for f in fields(ToolOverride)) - {"name", "updated_at"}


def is_blank(override: ToolOverride) -> bool:
    """Whether the curation changes nothing: its row then goes."""
    return all(getattr(override, name) in (None, ()) for name in CURATED)


class CurationWrites(SQLBase):
    async def list_tool_overrides(self) -> list[ToolOverride]:
        async with self.connection() as conn:
            return await OVERRIDES.fetch(conn)

    async def get_tool_override(self, name: str) -> ToolOverride | None:
        async with self.connection() as conn:
            return await OVERRIDES.get(conn, name)

    async def curate_tool(self, name: str, changes: Mapping[str, Any]) -> ToolOverride:
        """See `Store.curate_tool`."""
        unknown = set(changes) - CURATED
        if unknown:
            raise ValueError(f"tool curation has no field(s) {sorted(unknown)}")
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                if await conn.fetchone("SELECT 1 FROM tools WHERE name = ?", (name,)) is None:
                    raise NotFound(f"tool {name!r} does not exist")
                current = await OVERRIDES.get(conn, name)
                fresh: dict[str, Any] = {
                    k: () if k == "tags" and v is None else v for k, v in changes.items()
                }
                fresh["updated_at"] = time.time()
                curated = replace(current or ToolOverride(name=name), **fresh)
                if curated.alias is not None:
                    await _check_alias(conn, name, curated.alias)
                if current is not None:
                    await conn.execute("DELETE FROM tool_overrides WHERE name = ?", (name,))
                if not is_blank(curated):
                    await conn.execute(OVERRIDES.insert, OVERRIDES.params(curated))
        except DuplicateKey:
            # A concurrent writer took the alias between our check and our insert.
            raise Conflict(f"alias {changes.get('alias')!r} of tool {name!r} is taken") from None
        return curated


async def _check_alias(conn: Connection, name: str, alias: str) -> None:
    """An alias must name no other tool, by gateway name or by alias."""
    if alias == name:
        return
    if await conn.fetchone("SELECT 1 FROM tools WHERE name = ?", (alias,)) is not None:
        raise Conflict(f"alias {alias!r} of tool {name!r} is the name of tool {alias!r}")
    row = await conn.fetchone(
        "SELECT name FROM tool_overrides WHERE alias = ? AND name <> ?", (alias, name)
    )
    if row is not None:
        raise Conflict(f"alias {alias!r} of tool {name!r} is already the alias of tool {row[0]!r}")
