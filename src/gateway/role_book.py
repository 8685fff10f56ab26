"""Each worker's roles: those of the settings (`ROLES`, `ROLES_FILE`) and those made through
the admin API (the store's `roles` table), and the grant of each caller.

A write to the table bumps the catalogue version, so it travels like any catalogue change:
the writer's `Registry.changed()` returns once every worker has reloaded, and reloading
the catalogue reloads the roles (`following`). Checking a request never queries the store:
the grant of a caller is computed once and remembered until the roles change.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import web

from gateway.access import admin_area
from gateway.catalogue import Catalogue
from gateway.contracts import Principal
from gateway.roles import Grant, Role, RoleError, grant_for, parse_role
from gateway.settings import Settings, SettingsError
from gateway.store import Conflict, NotFound, Store
from gateway.store.connections import BUMP_VERSION

log = structlog.get_logger(__name__)

GRANTS_MAX = 4096
"""Callers whose grant a worker remembers."""
STORED_ROLES_MAX = 1000

Listener = Callable[[Catalogue, Catalogue], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StoredRole:
    role: Role
    created_at: float
    updated_at: float


async def stored_roles(store: Store) -> list[StoredRole]:
    async with store.connection() as conn:
        rows = await conn.fetchall(
            "SELECT name, definition, created_at, updated_at FROM roles ORDER BY name"
        )
    found = []
    for name, definition, created, updated in rows:
        try:
            role = parse_role(orjson.loads(definition), str(name))
        except (RoleError, orjson.JSONDecodeError) as exc:
            log.warning("stored role ignored", role=name, error=str(exc))
            continue
        found.append(StoredRole(role, float(created), float(updated)))
    return found


async def save_role(store: Store, role: Role, create: bool) -> StoredRole:
    """Insert (`create`) or replace a stored role; `Conflict` if it exists (on create),
    `NotFound` if it does not (on replace)."""
    now = time.time()
    definition = orjson.dumps(role.as_json()).decode()
    async with store.transaction() as conn:
        row = await conn.fetchone("SELECT created_at FROM roles WHERE name = ?", (role.name,))
        if create and row is not None:
            raise Conflict(f"role {role.name!r} already exists")
        if not create and row is None:
            raise NotFound(f"role {role.name!r} does not exist")
        if create:
            count = await conn.fetchone("SELECT COUNT(*) FROM roles")
            if count is not None and int(count[0]) >= STORED_ROLES_MAX:
                raise Conflict(f"there are {STORED_ROLES_MAX} roles already, the most allowed")
            await conn.execute(
                "INSERT INTO roles (name, definition, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (role.name, definition, now, now),
            )
            created = now
        else:
            await conn.execute(
                "UPDATE roles SET definition = ?, updated_at = ? WHERE name = ?",
                (definition, now, role.name),
            )
            created = float(row[0]) if row is not None else now
        await conn.execute(BUMP_VERSION)
    return StoredRole(role, created, now)


async def delete_role(store: Store, name: str) -> None:
    async with store.transaction() as conn:
        if not await conn.execute("DELETE FROM roles WHERE name = ?", (name,)):
            raise NotFound(f"role {name!r} does not exist")
        await conn.execute(BUMP_VERSION)


class RoleBook:
    """The roles in force on this worker, and the grants they give."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.configured: tuple[Role, ...] = settings.roles + settings.roles_from_file
        twice = sorted(
            {r.name for r in settings.roles} & {r.name for r in settings.roles_from_file}
        )
        if twice:
            raise SettingsError(f"role(s) defined in both ROLES and ROLES_FILE: {', '.join(twice)}")
        """The settings' roles: shown by the API, changed only by changing the settings."""
        self.group_claim = settings.roles_group_claim
        self.stored: list[StoredRole] = []
        self.active: tuple[Role, ...] = self.configured
        self._grants: OrderedDict[tuple[object, ...], Grant] = OrderedDict()

    async def start(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        stored = await stored_roles(self.store)
        names = {r.name for r in self.configured}
        clashing = [s.role.name for s in stored if s.role.name in names]
        if clashing:
            log.warning("stored roles shadowed by the settings' roles", roles=clashing)
        self.stored = [s for s in stored if s.role.name not in names]
        active = self.configured + tuple(s.role for s in self.stored)
        if active != self.active:
            self.active = active
            self._grants.clear()

    def following(self, listener: Listener) -> Listener:
        """`listener`, run after the roles are reloaded on every catalogue change."""

        async def changed(old: Catalogue, new: Catalogue) -> None:
            try:
                await self.reload()
            except Exception as exc:  # the next catalogue change or poll retries
                log.warning("roles reload failed", error=str(exc))
            await listener(old, new)

        return changed

    def grant(self, caller: Principal) -> Grant | None:
        """What `caller` may do, or None when roles do not limit it (no role defined, or
        an admin token)."""
        if not self.active or caller.is_admin:
            return None
        claims = caller.claims
        key = (caller.subject, caller.scopes, repr(claims.get(self.group_claim)))
        found = self._grants.get(key)
        if found is None:
            found = grant_for(self.active, caller, self.group_claim)
            self._grants[key] = found
            if len(self._grants) > GRANTS_MAX:
                self._grants.popitem(last=False)
        return found

    def administers(self, request: web.Request, caller: Principal) -> bool:
        """Whether the caller's roles grant the admin area and action of `request`."""
        grant = self.grant(caller)
        return grant is not None and grant.administers(*admin_area(request))
