"""Reading the catalogue: its version, one consistent snapshot of everything, and each kind
of record listed or looked up by key."""

from __future__ import annotations

from gateway.store import (
    CatalogueData,
    Connection,
    Offered,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ServerRecord,
    StoreError,
    ToolRecord,
    UpstreamRecord,
)
from gateway.store.connections import SQLBase
from gateway.store.owned import Kind
from gateway.store.tables import (
    OVERRIDES,
    PROMPTS,
    RESOURCES,
    SERVERS,
    TEMPLATES,
    TOOLS,
    UPSTREAMS,
)


class CatalogueReads(SQLBase):
    async def catalogue_version(self) -> int:
        async with self.connection() as conn:
            return await self._version(conn)

    async def _version(self, conn: Connection) -> int:
        row = await conn.fetchone("SELECT value FROM meta WHERE key = 'catalogue_version'")
        if row is None:
            raise StoreError(f"{self.label}: the catalogue version is missing; run migrations")
        return int(row[0])

    async def load_catalogue(self) -> CatalogueData:
        async with self.snapshot() as conn:
            return CatalogueData(
                version=await self._version(conn),
                upstreams=await UPSTREAMS.fetch(conn, cipher=self.cipher),
                tools=await TOOLS.rows.fetch(conn),
                resources=await RESOURCES.rows.fetch(conn),
                templates=await TEMPLATES.rows.fetch(conn),
                prompts=await PROMPTS.rows.fetch(conn),
                servers=await SERVERS.fetch(conn),
                overrides=await OVERRIDES.fetch(conn),
            )

    async def list_upstreams(self) -> list[UpstreamRecord]:
        async with self.connection() as conn:
            return await UPSTREAMS.fetch(conn, cipher=self.cipher)

    async def get_upstream(self, name: str) -> UpstreamRecord | None:
        async with self.connection() as conn:
            return await UPSTREAMS.get(conn, name, self.cipher)

    async def _list(self, kind: Kind[Offered]) -> list[Offered]:
        async with self.connection() as conn:
            return await kind.rows.fetch(conn)

    async def _get(self, kind: Kind[Offered], key: str) -> Offered | None:
        async with self.connection() as conn:
            return await kind.rows.get(conn, key)

    async def list_tools(self) -> list[ToolRecord]:
        return await self._list(TOOLS)

    async def get_tool(self, name: str) -> ToolRecord | None:
        return await self._get(TOOLS, name)

    async def list_resources(self) -> list[ResourceRecord]:
        return await self._list(RESOURCES)

    async def get_resource(self, uri: str) -> ResourceRecord | None:
        return await self._get(RESOURCES, uri)

    async def list_resource_templates(self) -> list[ResourceTemplateRecord]:
        return await self._list(TEMPLATES)

    async def get_resource_template(self, uri_template: str) -> ResourceTemplateRecord | None:
        return await self._get(TEMPLATES, uri_template)

    async def list_prompts(self) -> list[PromptRecord]:
        return await self._list(PROMPTS)

    async def get_prompt(self, name: str) -> PromptRecord | None:
        return await self._get(PROMPTS, name)

    async def list_servers(self) -> list[ServerRecord]:
        async with self.connection() as conn:
            return await SERVERS.fetch(conn)

    async def get_server(self, id: str) -> ServerRecord | None:
        async with self.connection() as conn:
            return await SERVERS.get(conn, id)
