"""The rules every kind of record an upstream offers shares: keys unique across upstreams,
records stored under the upstream being written, operator settings kept across updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Generic

from gateway.store import Conflict, Connection, Offered, operator_settings
from gateway.store.rows import Rows


@dataclass(frozen=True, slots=True)
class Kind(Generic[Offered]):
    """One kind of offered record: its table, and how messages name it."""

    noun: str
    """How messages name one record: 'tool', 'resource template'."""
    key_label: str
    """How messages name its key: 'tool name', 'resource URI'."""
    rows: Rows[Offered]
    original: str | None = None
    """The column of the upstream's own name for a record, where the gateway renames it."""

    @property
    def settings(self) -> frozenset[str]:
        """Set by operators rather than upstreams: kept across updates, and all that may change."""
        return frozenset(operator_settings(self.rows.record_type))

    def key(self, record: Offered) -> str:
        return str(self.rows.value(record, self.rows.key))

    def check_list(self, upstream: str, records: Sequence[Offered]) -> None:
        """Reject a list that would clash with itself."""
        keys: set[str] = set()
        originals: set[str] = set()
        for record in records:
            key = self.key(record)
            if key in keys:
                raise Conflict(f"{self.key_label} {key!r} appears twice in upstream {upstream!r}")
            keys.add(key)
            if self.original is not None:
                original = self.rows.value(record, self.original)
                if original in originals:
                    raise Conflict(
                        f"{self.noun} {original!r} appears twice in upstream {upstream!r}"
                    )
                originals.add(original)

    async def check_owners(
        self, conn: Connection, upstream: str, records: Sequence[Offered]
    ) -> None:
        """Raise `Conflict` naming both owners if another upstream holds one of the keys."""
        if not records:
            return
        # Annotated because mypy cannot infer it under the constrained type variable.
        keys: list[str] = [self.key(record) for record in records]
        marks = ", ".join("?" for _ in keys)
        key_column, table = self.rows.key, self.rows.table
        row = await conn.fetchone(
            f"SELECT {key_column}, upstream FROM {table} "
            f"WHERE {key_column} IN ({marks}) AND upstream <> ? "
            f"ORDER BY {key_column} LIMIT 1",
            (*keys, upstream),
        )
        if row is not None:
            raise Conflict(
                f"{self.key_label} {row[0]!r} from upstream {upstream!r} clashes with the "
                f"{self.noun} of upstream {row[1]!r}"
            )

    async def insert(self, conn: Connection, upstream: str, records: Sequence[Offered]) -> None:
        # The owner comes from the call, not the record, so a record copied from another
        # upstream cannot land under the wrong one.
        for record in records:
            owned = replace(record, upstream=upstream)
            await conn.execute(self.rows.insert, self.rows.params(owned))

    async def replace(self, conn: Connection, upstream: str, records: Sequence[Offered]) -> None:
        """Make `records` the upstream's whole list; surviving keys keep their settings."""
        before = await self.rows.fetch(conn, "WHERE upstream = ?", (upstream,))
        kept = {self.key(record): record for record in before}
        await conn.execute(f"DELETE FROM {self.rows.table} WHERE upstream = ?", (upstream,))
        await self.insert(
            conn, upstream, [self._keep(record, kept.get(self.key(record))) for record in records]
        )

    def _keep(self, record: Offered, old: Offered | None) -> Offered:
        if old is None:
            return record
        return replace(record, **{name: getattr(old, name) for name in self.settings})
