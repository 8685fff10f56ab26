"""Writing upstreams with everything they offer, each write in one transaction: nothing is
written when a name, URI or template is taken, and the error names both owners."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from gateway.store import Conflict, Connection, Features, NotFound, ToolRecord, UpstreamRecord
from gateway.store.connections import BUMP_VERSION, DuplicateKey, SQLBase
from gateway.store.tables import UPSTREAMS, offered

NO_FEATURES = Features()
"""An upstream that offers nothing besides tools."""


class UpstreamWrites(SQLBase):
    async def create_upstream(
        self,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord],
        features: Features = NO_FEATURES,
    ) -> None:
        """See `Store.create_upstream`; `created_at` and `updated_at` are the store's clock."""
        parts = offered(tools, features)
        for kind, records in parts:
            kind.check_list(upstream.name, records)
        now = time.time()
        params = UPSTREAMS.params(replace(upstream, created_at=now, updated_at=now), self.cipher)
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                await self._check_new_upstream(conn, upstream, tools, features)
                await conn.execute(UPSTREAMS.insert, params)
                for kind, records in parts:
                    await kind.insert(conn, upstream.name, records)
        except DuplicateKey:
            # A writer outside this process's ordering won the race; explain who.
            async with self.connection() as conn:
                await self._check_new_upstream(conn, upstream, tools, features)
            raise Conflict(
                f"upstream {upstream.name!r} or one of its records was created concurrently"
            ) from None

    @staticmethod
    async def _check_new_upstream(
        conn: Connection,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord],
        features: Features,
    ) -> None:
        if await conn.fetchone("SELECT 1 FROM upstreams WHERE name = ?", (upstream.name,)):
            raise Conflict(f"upstream {upstream.name!r} already exists")
        for kind, records in offered(tools, features):
            await kind.check_owners(conn, upstream.name, records)

    async def update_upstream(
        self,
        upstream: UpstreamRecord,
        tools: Sequence[ToolRecord] | None = None,
        features: Features | None = None,
    ) -> None:
        """See `Store.update_upstream`; `created_at` is kept and `updated_at` set to now."""
        parts = offered(tools, features)
        for kind, records in parts:
            kind.check_list(upstream.name, records)
        statement = UPSTREAMS.update(
            replace(upstream, updated_at=time.time()), keep={"created_at"}, cipher=self.cipher
        )
        try:
            async with self.transaction() as conn:
                await conn.execute(BUMP_VERSION)
                if not await conn.execute(*statement):
                    raise NotFound(f"upstream {upstream.name!r} does not exist")
                for kind, records in parts:
                    await kind.check_owners(conn, upstream.name, records)
                for kind, records in parts:
                    await kind.replace(conn, upstream.name, records)
        except DuplicateKey:
            async with self.connection() as conn:
                for kind, records in parts:
                    await kind.check_owners(conn, upstream.name, records)
            raise Conflict(
                f"a record of upstream {upstream.name!r} was created concurrently elsewhere"
            ) from None

    async def delete_upstream(self, name: str) -> bool:
        async with self.transaction() as conn:
            # What the upstream offers goes with it through ON DELETE CASCADE.
            deleted = await conn.execute("DELETE FROM upstreams WHERE name = ?", (name,))
            if deleted:
                await conn.execute(BUMP_VERSION)
        return bool(deleted)
