"""Roles: what a caller may list and use, and what it may administer, from its token.

A role names the callers it applies to (any of: a scope they hold, a group in their group
claim, a subject glob) and grants:

- `servers`: the virtual servers (id globs) they may reach; `*` also reaches the whole
  gateway's endpoints (`/rpc`, `/mcp`, `/sse`);
- `tools`, `resources`, `prompts`: name (URI for resources) globs or `tag:<tag>` entries
  (tools), either one list for listing and use or `{"list": [...], "use": [...]}`;
- `admin`: admin areas (`upstreams`, `servers`, `tools`, `roles`, `tokens`...), each alone
  (read and write), as `area:read` / `area:write`, or `*` for all.

What a role leaves out it does not grant. A caller gets the union of the roles that apply
to it; tokens with the `admin` scope, and everyone when no role is defined, are not limited
by roles at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from gateway.contracts import Principal

NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
KINDS = ("tools", "resources", "prompts")
KIND_NOUNS = {"tools": "tool", "resources": "resource", "prompts": "prompt"}
ACTIONS = ("read", "write")
ROLE_FIELDS = {"name", "description", "match", "servers", "admin", *KINDS}
MATCH_FIELDS = {"scopes", "groups", "subjects"}
PATTERNS_MAX = 256
"""Entries one list of a role may hold."""
TAG = "tag:"


class RoleError(ValueError):
    """A role definition the gateway cannot use; the message names the role and field."""


@dataclass(frozen=True, slots=True)
class Patterns:
    """Name globs and tags; matches a name (or one of its other names) or a tag."""

    globs: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()

    def matches(self, names: Iterable[str], tags: Iterable[str] = ()) -> bool:
        if self.tags and not self.tags.isdisjoint(tags):
            return True
        return any(fnmatchcase(name, glob) for glob in self.globs for name in names)

    def __or__(self, other: Patterns) -> Patterns:
        return Patterns(self.globs + other.globs, self.tags | other.tags)

    def as_json(self) -> list[str]:
        return [*self.globs, *(TAG + t for t in sorted(self.tags))]


@dataclass(frozen=True, slots=True)
class Access:
    """What of one kind a caller may see in lists, and what it may call or read."""

    list: Patterns = Patterns()
    use: Patterns = Patterns()

    def __or__(self, other: Access) -> Access:
        return Access(self.list | other.list, self.use | other.use)

    def as_json(self) -> Any:
        shown, used = self.list.as_json(), self.use.as_json()
        return shown if shown == used else {"list": shown, "use": used}


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    description: str = ""
    scopes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    subjects: tuple[str, ...] = ()
    servers: Patterns = Patterns()
    tools: Access = Access()
    resources: Access = Access()
    prompts: Access = Access()
    admin: frozenset[str] = frozenset()

    def applies(self, subject: str, scopes: frozenset[str], groups: frozenset[str]) -> bool:
        return (
            not self.scopes.isdisjoint(scopes)
            or not self.groups.isdisjoint(groups)
            or any(fnmatchcase(subject, glob) for glob in self.subjects)
        )

    def as_json(self) -> dict[str, Any]:
        match: dict[str, Any] = {}
        if self.scopes:
            match["scopes"] = sorted(self.scopes)
        if self.groups:
            match["groups"] = sorted(self.groups)
        if self.subjects:
            match["subjects"] = list(self.subjects)
        return {
            "name": self.name,
            "description": self.description,
            "match": match,
            "servers": self.servers.as_json(),
            "tools": self.tools.as_json(),
            "resources": self.resources.as_json(),
            "prompts": self.prompts.as_json(),
            "admin": sorted(self.admin),
        }


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RoleError(f"{where} must be a list of non-empty strings")
    if len(value) > PATTERNS_MAX:
        raise RoleError(f"{where} has more than {PATTERNS_MAX} entries")
    return list(dict.fromkeys(value))


def _patterns(value: Any, where: str, tags: bool) -> Patterns:
    entries = _strings(value, where)
    found_tags = frozenset(e.removeprefix(TAG) for e in entries if e.startswith(TAG))
    if found_tags and not tags:
        raise RoleError(f"{where}: only tools have tags")
    return Patterns(tuple(e for e in entries if not e.startswith(TAG)), found_tags)


def _access(value: Any, where: str, tags: bool) -> Access:
    if value is None:
        return Access()
    if isinstance(value, list):
        both = _patterns(value, where, tags)
        return Access(both, both)
    if isinstance(value, dict):
        unknown = set(value) - {"list", "use"}
        if unknown:
            raise RoleError(f"{where} has unknown field(s): {', '.join(sorted(unknown))}")
        return Access(
            _patterns(value.get("list", []), f"{where}.list", tags),
            _patterns(value.get("use", []), f"{where}.use", tags),
        )
    raise RoleError(f'{where} must be a list of patterns or {{"list": [...], "use": [...]}}')


def _admin(value: Any, where: str) -> frozenset[str]:
    areas = _strings(value, where)
    for area in areas:
        name, _, action = area.partition(":")
        if not re.fullmatch(r"[a-z*][a-z0-9_-]*|\*", name) or action not in ("", *ACTIONS, "*"):
            raise RoleError(
                f"{where}: {area!r} is not an admin area; use '*', '<area>',"
                " '<area>:read' or '<area>:write' (e.g. upstreams:read)"
            )
    return frozenset(areas)


def parse_role(data: Any, name: str | None = None) -> Role:
    """A role from its JSON form; `name`, when given, is the name it must have (or get)."""
    if not isinstance(data, dict):
        raise RoleError("a role must be a JSON object")
    if name is not None:
        data = {**data, "name": data.get("name", name)}
        if data["name"] != name:
            raise RoleError(f"the role's name {data['name']!r} differs from {name!r}")
    role_name = data.get("name")
    if not isinstance(role_name, str) or not NAME.fullmatch(role_name):
        raise RoleError("a role needs a 'name' of 1-64 letters, digits, '_', '-', '.', ':'")
    where = f"role {role_name!r}"
    unknown = set(data) - ROLE_FIELDS
    if unknown:
        raise RoleError(f"{where} has unknown field(s): {', '.join(sorted(unknown))}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise RoleError(f"{where}: description must be a string")
    match = data.get("match")
    if not isinstance(match, dict) or not match:
        raise RoleError(f"{where} needs 'match': an object with scopes, groups and/or subjects")
    unknown = set(match) - MATCH_FIELDS
    if unknown:
        raise RoleError(f"{where}.match has unknown field(s): {', '.join(sorted(unknown))}")
    return Role(
        name=role_name,
        description=description,
        scopes=frozenset(_strings(match.get("scopes", []), f"{where}.match.scopes")),
        groups=frozenset(_strings(match.get("groups", []), f"{where}.match.groups")),
        subjects=tuple(_strings(match.get("subjects", []), f"{where}.match.subjects")),
        servers=_patterns(data.get("servers", []), f"{where}.servers", tags=False),
        tools=_access(data.get("tools"), f"{where}.tools", tags=True),
        resources=_access(data.get("resources"), f"{where}.resources", tags=False),
        prompts=_access(data.get("prompts"), f"{where}.prompts", tags=False),
        admin=_admin(data.get("admin", []), f"{where}.admin"),
    )


def parse_roles(data: Any) -> tuple[Role, ...]:
    """Roles from a JSON list (or an object of name -> role); names must be unique."""
    if isinstance(data, dict):
        items = [parse_role(role, name) for name, role in data.items()]
    elif isinstance(data, list):
        items = [parse_role(role) for role in data]
    else:
        raise RoleError("roles must be a list of role objects (or an object of name -> role)")
    seen: set[str] = set()
    for role in items:
        if role.name in seen:
            raise RoleError(f"role {role.name!r} is defined twice")
        seen.add(role.name)
    return tuple(items)


def _groups(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


@dataclass(frozen=True, slots=True)
class Grant:
    """The union of the roles that apply to one caller."""

    roles: tuple[str, ...]
    servers: Patterns
    access: Mapping[str, Access]
    admin: frozenset[str]

    def reaches(self, server: str | None) -> bool:
        if server is None:
            return "*" in self.servers.globs
        return self.servers.matches((server,))

    def lists(self, kind: str, names: Iterable[str], tags: Iterable[str] = ()) -> bool:
        return self.access[kind].list.matches(names, tags)

    def uses(self, kind: str, names: Iterable[str], tags: Iterable[str] = ()) -> bool:
        return self.access[kind].use.matches(names, tags)

    def administers(self, area: str, action: str) -> bool:
        return not self.admin.isdisjoint(
            {"*", f"*:{action}", area, f"{area}:*", f"{area}:{action}"}
        )

    def refusal(self, what: str) -> str:
        held = ", ".join(self.roles) if self.roles else "none"
        return f"Forbidden: {what} needs a role that grants it (this token's roles: {held})"


def grant_for(roles: Iterable[Role], caller: Principal, group_claim: str) -> Grant:
    groups = _groups(caller.claims, group_claim)
    applying = [r for r in roles if r.applies(caller.subject, caller.scopes, groups)]
    servers = Patterns()
    access = {kind: Access() for kind in KINDS}
    admin: frozenset[str] = frozenset()
    for role in applying:
        servers |= role.servers
        for kind in KINDS:
            access[kind] |= getattr(role, kind)
        admin |= role.admin
    return Grant(tuple(r.name for r in applying), servers, access, admin)
