"""Operator settings of what upstreams offer: `enabled` on every kind, and `cache_ttl` and
`rate_limit` on tools. Nothing else of a record may be changed; its upstream decides that."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.store import (
    NotFound,
    Offered,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ToolRecord,
)
from gateway.store.connections import BUMP_VERSION, SQLBase
from gateway.store.owned import Kind
from gateway.store.tables import PROMPTS, RESOURCES, TEMPLATES, TOOLS


class SettingChanges(SQLBase):
    async def update_tool(self, name: str, changes: Mapping[str, Any]) -> ToolRecord:
        return await self._change_settings(TOOLS, name, changes)

    async def update_resource(self, uri: str, changes: Mapping[str, Any]) -> ResourceRecord:
        return await self._change_settings(RESOURCES, uri, changes)

    async def update_resource_template(
        self, uri_template: str, changes: Mapping[str, Any]
    ) -> ResourceTemplateRecord:
        return await self._change_settings(TEMPLATES, uri_template, changes)

    async def update_prompt(self, name: str, changes: Mapping[str, Any]) -> PromptRecord:
        return await self._change_settings(PROMPTS, name, changes)

    async def _change_settings(
        self, kind: Kind[Offered], key: str, changes: Mapping[str, Any]
    ) -> Offered:
        unknown = set(changes) - kind.settings
        if unknown:
            raise ValueError(
                f"{kind.noun} fields {sorted(unknown)} cannot be changed; "
                f"only {sorted(kind.settings)}"
            )
        async with self.transaction() as conn:
            if changes:
                await conn.execute(BUMP_VERSION)
                await conn.execute(*kind.rows.assign(key, changes))
            record = await kind.rows.get(conn, key)
            if record is None:
                # Raised inside the transaction, so the version bump is rolled back.
                raise NotFound(f"{kind.noun} {key!r} does not exist")
        return record
