"""Writing virtual servers: named bundles of tools, resources and prompts by gateway name,
kept apart from the upstreams those come from."""

from __future__ import annotations

import time
from dataclasses import replace

from gateway.store import Conflict, NotFound, ServerRecord
from gateway.store.connections import BUMP_VERSION, DuplicateKey, SQLBase
from gateway.store.tables import SERVERS


class ServerWrites(SQLBase):
    async def create_server(self, server: ServerRecord) -> ServerRecord:
        """See `Store.create_server`; `created_at` and `updated_at` are the store's clock."""
        now = time.time()
        stored = replace(server, created_at=now, updated_at=now)
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                if await conn.fetchone("SELECT 1 FROM servers WHERE id = ?", (server.id,)):
                    raise Conflict(f"server {server.id!r} already exists")
                await conn.execute(SERVERS.insert, SERVERS.params(stored))
        except DuplicateKey:
            raise Conflict(f"server {server.id!r} already exists") from None
        return stored

    async def update_server(self, server: ServerRecord) -> ServerRecord:
        """See `Store.update_server`; `updated_at` is set to now."""
        statement = SERVERS.update(replace(server, updated_at=time.time()), keep={"created_at"})
        async with self.transaction() as conn:
            await conn.execute(BUMP_VERSION)
            if not await conn.execute(*statement):
                raise NotFound(f"server {server.id!r} does not exist")
            [stored] = await SERVERS.fetch(conn, "WHERE id = ?", (server.id,))
        return stored

    async def delete_server(self, id: str) -> bool:
        async with self.transaction() as conn:
            deleted = await conn.execute("DELETE FROM servers WHERE id = ?", (id,))
            if deleted:
                await conn.execute(BUMP_VERSION)
        return bool(deleted)
