"""The store's resources, resource templates, prompts and virtual servers, on SQLite and
PostgreSQL: round trips, conflicts naming both owners, settings kept across updates,
cascades, catalogue versions and consistent reads."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway.contracts import PromptDef, ResourceDef, ResourceTemplateDef
from gateway.store import (
    Conflict,
    Features,
    NotFound,
    PromptRecord,
    ResourceRecord,
    ResourceTemplateRecord,
    ServerRecord,
    Store,
)
from tests.store.conftest import (
    SECRET,
    changed,
    miss_the_next_check,
    opened,
    raw_rows,
    tool,
    upstream,
)


def resource(owner: str, path: str, **changes: Any) -> ResourceRecord:
    definition = ResourceDef(uri=f"file:///{owner}/{path}", name=path)
    return changed(ResourceRecord(upstream=owner, definition=definition), **changes)


def template(owner: str, variable: str, **changes: Any) -> ResourceTemplateRecord:
    definition = ResourceTemplateDef(uri_template=f"file:///{owner}/{{{variable}}}", name=variable)
    return changed(ResourceTemplateRecord(upstream=owner, definition=definition), **changes)


def prompt(owner: str, original: str, **changes: Any) -> PromptRecord:
    record = PromptRecord(
        name=f"{owner}__{original}", upstream=owner, definition=PromptDef(name=original)
    )
    return changed(record, **changes)


def features(owner: str) -> Features:
    return Features(
        resources=[resource(owner, "readme")],
        templates=[template(owner, "path")],
        prompts=[prompt(owner, "greet")],
    )


def server(server_id: str = "s1", **changes: Any) -> ServerRecord:
    fields: dict[str, Any] = {"id": server_id, "name": f"Server {server_id}"}
    fields.update(changes)
    return ServerRecord(**fields)


async def owned_by(store: Store, owner: str) -> list[str]:
    """Every key the upstream owns, of every kind, to prove what was (not) written."""
    data = await store.load_catalogue()
    return sorted(
        [t.name for t in data.tools if t.upstream == owner]
        + [r.definition.uri for r in data.resources if r.upstream == owner]
        + [t.definition.uri_template for t in data.templates if t.upstream == owner]
        + [p.name for p in data.prompts if p.upstream == owner]
    )


# --- create and read -------------------------------------------------------------------------


async def test_create_upstream_with_features_round_trips_every_field(store: Store) -> None:
    readme = resource(
        "a",
        "readme",
        description="The read-me",
        title="Read me",
        mime_type="text/markdown",
        size=1234,
        annotations={"audience": ["user"], "priority": 0.5},
        enabled=False,
    )
    path = template(
        "a",
        "path",
        description="Any file",
        title="File",
        mime_type="text/plain",
        annotations={"audience": ["assistant"]},
    )
    greet = prompt(
        "a",
        "greet",
        description="Say hello",
        title="Greeting",
        arguments=({"name": "who", "required": True}, {"name": "tone"}),
    )
    plain = resource("a", "plain")

    await store.create_upstream(
        upstream("a"),
        [tool("a", "echo")],
        Features(resources=[readme, plain], templates=[path], prompts=[greet]),
    )

    assert await store.get_resource(readme.definition.uri) == readme
    assert await store.get_resource(plain.definition.uri) == plain
    assert await store.list_resources() == [plain, readme]
    assert await store.get_resource_template(path.definition.uri_template) == path
    assert await store.list_resource_templates() == [path]
    assert await store.get_prompt("a__greet") == greet
    assert await store.list_prompts() == [greet]
    assert [t.name for t in await store.list_tools()] == ["a__echo"]


async def test_create_upstream_without_features_offers_only_tools(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])

    assert await owned_by(store, "a") == ["a__echo"]


async def test_records_are_stored_under_the_upstream_being_written(store: Store) -> None:
    await store.create_upstream(
        upstream("a"),
        [],
        Features(
            resources=[resource("elsewhere", "r")],
            templates=[template("elsewhere", "t")],
            prompts=[prompt("elsewhere", "p")],
        ),
    )

    data = await store.load_catalogue()
    owners = {r.upstream for r in data.resources} | {t.upstream for t in data.templates}
    assert owners | {p.upstream for p in data.prompts} == {"a"}


async def test_get_of_missing_features_and_servers_returns_none(store: Store) -> None:
    assert await store.get_resource("file:///nope") is None
    assert await store.get_resource_template("file:///{nope}") is None
    assert await store.get_prompt("nope") is None
    assert await store.get_server("nope") is None


# --- conflicts -------------------------------------------------------------------------------

CLASHES = {
    "resource": (
        Features(resources=[resource("b", "own"), resource("b", "x", uri="file:///a/readme")]),
        "resource URI 'file:///a/readme' from upstream 'b' clashes with the resource of "
        "upstream 'a'",
    ),
    "template": (
        Features(templates=[template("b", "x", uri_template="file:///a/{path}")]),
        "resource template 'file:///a/{path}' from upstream 'b' clashes with the resource "
        "template of upstream 'a'",
    ),
    "prompt": (
        Features(prompts=[prompt("b", "greet", name="a__greet")]),
        "prompt name 'a__greet' from upstream 'b' clashes with the prompt of upstream 'a'",
    ),
}


@pytest.mark.parametrize("kind", sorted(CLASHES))
async def test_create_upstream_with_a_taken_key_names_both_owners_and_writes_nothing(
    store: Store, kind: str
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")], features("a"))
    before = await store.load_catalogue()
    clashing, message = CLASHES[kind]

    with pytest.raises(Conflict) as caught:
        await store.create_upstream(upstream("b"), [tool("b", "add")], clashing)

    assert str(caught.value) == message
    assert await store.get_upstream("b") is None
    assert await owned_by(store, "b") == []
    assert await store.load_catalogue() == before


@pytest.mark.parametrize("kind", sorted(CLASHES))
async def test_update_upstream_with_a_taken_key_names_both_owners_and_writes_nothing(
    store: Store, kind: str
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")], features("a"))
    await store.create_upstream(upstream("b"), [tool("b", "add")], features("b"))
    before = await store.load_catalogue()
    clashing, message = CLASHES[kind]

    with pytest.raises(Conflict) as caught:
        await store.update_upstream(
            upstream("b", url="http://changed"), [tool("b", "new")], clashing
        )

    assert str(caught.value) == message
    assert await store.load_catalogue() == before


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        (
            Features(resources=[resource("a", "r"), resource("a", "r", name="again")]),
            "resource URI 'file:///a/r' appears twice in upstream 'a'",
        ),
        (
            Features(templates=[template("a", "t"), template("a", "t")]),
            "resource template 'file:///a/{t}' appears twice in upstream 'a'",
        ),
        (
            Features(prompts=[prompt("a", "p"), prompt("a", "p", name="other")]),
            "prompt 'p' appears twice in upstream 'a'",
        ),
    ],
    ids=["resource", "template", "prompt-original-name"],
)
async def test_an_upstream_offering_one_key_twice_raises_conflict_and_writes_nothing(
    store: Store, offer: Features, message: str
) -> None:
    with pytest.raises(Conflict) as caught:
        await store.create_upstream(upstream("a"), [], offer)

    assert str(caught.value) == message
    assert await store.list_upstreams() == []


async def test_unique_violation_on_a_feature_still_names_both_owners(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose own check missed a racing commit hits the primary key instead."""
    await store.create_upstream(upstream("a"), [], features("a"))
    checks = miss_the_next_check(monkeypatch)

    with pytest.raises(Conflict) as caught:
        await store.create_upstream(
            upstream("b"), [], Features(prompts=[prompt("b", "greet", name="a__greet")])
        )

    assert "'a__greet' from upstream 'b' clashes with the prompt of upstream 'a'" in str(
        caught.value
    )
    assert checks == ["b", "b"]
    assert await store.get_upstream("b") is None


async def test_racing_creates_of_one_resource_uri_have_exactly_one_winner(
    database_url: str,
) -> None:
    first, second = await opened(database_url), await opened(database_url)
    shared = "file:///shared"
    try:
        results = await asyncio.gather(
            first.create_upstream(
                upstream("a"), [], Features(resources=[resource("a", "x", uri=shared)])
            ),
            second.create_upstream(
                upstream("b"), [], Features(resources=[resource("b", "x", uri=shared)])
            ),
            return_exceptions=True,
        )
        conflicts = [r for r in results if isinstance(r, Conflict)]
        assert len(conflicts) == 1 and results.count(None) == 1, results
        assert f"resource URI {shared!r}" in str(conflicts[0])
        assert len(await first.list_upstreams()) == 1
    finally:
        await first.close()
        await second.close()


# --- updates ---------------------------------------------------------------------------------


async def test_update_upstream_keeps_enabled_flags_of_records_whose_key_survives(
    store: Store,
) -> None:
    await store.create_upstream(
        upstream("a"),
        [],
        Features(
            resources=[resource("a", "kept"), resource("a", "gone")],
            templates=[template("a", "kept"), template("a", "gone")],
            prompts=[prompt("a", "kept"), prompt("a", "gone")],
        ),
    )
    await store.update_resource("file:///a/kept", {"enabled": False})
    await store.update_resource_template("file:///a/{kept}", {"enabled": False})
    await store.update_prompt("a__kept", {"enabled": False})

    await store.update_upstream(
        upstream("a"),
        features=Features(
            # The upstream says enabled; the operator's choice wins for known keys.
            resources=[resource("a", "kept", description="new"), resource("a", "fresh")],
            templates=[template("a", "kept", title="New"), template("a", "fresh", enabled=False)],
            prompts=[prompt("a", "kept", arguments=({"name": "x"},)), prompt("a", "fresh")],
        ),
    )

    data = await store.load_catalogue()
    assert [(r.definition.uri, r.enabled, r.definition.description) for r in data.resources] == [
        ("file:///a/fresh", True, ""),
        ("file:///a/kept", False, "new"),
    ]
    assert [(t.definition.uri_template, t.enabled, t.definition.title) for t in data.templates] == [
        ("file:///a/{fresh}", False, None),
        ("file:///a/{kept}", False, "New"),
    ]
    assert [(p.name, p.enabled, p.definition.arguments) for p in data.prompts] == [
        ("a__fresh", True, ()),
        ("a__kept", False, ({"name": "x"},)),
    ]


async def test_update_upstream_keeps_settings_of_a_key_that_moves_within_the_upstream(
    store: Store,
) -> None:
    """A prompt renamed upstream but keeping its gateway name is the same record to operators."""
    await store.create_upstream(upstream("a"), [], Features(prompts=[prompt("a", "old")]))
    await store.update_prompt("a__old", {"enabled": False})

    await store.update_upstream(
        upstream("a"), features=Features(prompts=[prompt("a", "new", name="a__old")])
    )

    assert await store.get_prompt("a__old") == prompt("a", "new", name="a__old", enabled=False)


async def test_update_upstream_without_features_leaves_them_alone(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")], features("a"))
    before = await owned_by(store, "a")

    await store.update_upstream(upstream("a", url="http://moved"), [tool("a", "add")])

    assert await owned_by(store, "a") == sorted({*before, "a__add"} - {"a__echo"})


async def test_update_upstream_with_features_only_leaves_its_tools_alone(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")], features("a"))

    await store.update_upstream(upstream("a"), features=Features())

    assert await owned_by(store, "a") == ["a__echo"]


async def test_update_of_missing_upstream_with_features_raises_not_found_and_writes_nothing(
    store: Store,
) -> None:
    version = await store.catalogue_version()
    with pytest.raises(NotFound, match="upstream 'ghost' does not exist"):
        await store.update_upstream(upstream("ghost"), features=features("ghost"))
    assert await owned_by(store, "ghost") == []
    assert await store.catalogue_version() == version


async def test_update_of_feature_settings_changes_enabled_and_returns_the_record(
    store: Store,
) -> None:
    await store.create_upstream(upstream("a"), [], features("a"))

    changed_resource = await store.update_resource("file:///a/readme", {"enabled": False})
    changed_template = await store.update_resource_template("file:///a/{path}", {"enabled": False})
    changed_prompt = await store.update_prompt("a__greet", {"enabled": False})

    assert changed_resource == resource("a", "readme", enabled=False)
    assert changed_template == template("a", "path", enabled=False)
    assert changed_prompt == prompt("a", "greet", enabled=False)
    assert await store.get_resource("file:///a/readme") == changed_resource
    assert await store.get_resource_template("file:///a/{path}") == changed_template
    assert await store.get_prompt("a__greet") == changed_prompt
    assert (await store.update_prompt("a__greet", {"enabled": True})).enabled is True


async def test_update_of_feature_settings_refuses_fields_other_than_enabled(store: Store) -> None:
    await store.create_upstream(upstream("a"), [], features("a"))
    version = await store.catalogue_version()

    with pytest.raises(ValueError, match=r"resource fields \['name'\] cannot be changed"):
        await store.update_resource("file:///a/readme", {"name": "no"})
    with pytest.raises(ValueError, match=r"resource template fields \['title'\]"):
        await store.update_resource_template("file:///a/{path}", {"title": "no"})
    with pytest.raises(ValueError, match=r"only \['enabled'\]"):
        await store.update_prompt("a__greet", {"enabled": False, "description": "no"})

    assert await store.catalogue_version() == version
    assert (await store.get_prompt("a__greet")).enabled is True  # type: ignore[union-attr]


async def test_update_of_missing_features_raises_not_found_and_keeps_the_version(
    store: Store,
) -> None:
    version = await store.catalogue_version()

    with pytest.raises(NotFound, match=r"^resource 'file:///ghost' does not exist$"):
        await store.update_resource("file:///ghost", {"enabled": False})
    with pytest.raises(NotFound, match=r"^resource template 'ghost' does not exist$"):
        await store.update_resource_template("ghost", {"enabled": False})
    with pytest.raises(NotFound, match=r"^prompt 'ghost' does not exist$"):
        await store.update_prompt("ghost", {"enabled": False})

    assert await store.catalogue_version() == version


# --- cascades --------------------------------------------------------------------------------


async def test_delete_upstream_removes_its_resources_templates_and_prompts(
    database_url: str, store: Store
) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")], features("a"))
    await store.create_upstream(upstream("b"), [tool("b", "echo")], features("b"))

    assert await store.delete_upstream("a") is True

    assert await owned_by(store, "a") == []
    assert await owned_by(store, "b") == [
        "b__echo",
        "b__greet",
        "file:///b/readme",
        "file:///b/{path}",
    ]
    for table in ("tools", "resources", "resource_templates", "prompts"):
        assert raw_rows(database_url, f"SELECT DISTINCT upstream FROM {table}") == [("b",)]


# --- virtual servers -------------------------------------------------------------------------


async def test_create_server_sets_timestamps_and_round_trips_every_field(store: Store) -> None:
    record = server(
        "s1",
        description="For the support team",
        tools=("a__echo", "b__add"),
        resources=("file:///a/readme", "file:///a/{path}"),
        prompts=("a__greet",),
    )

    stored = await store.create_server(record)

    assert stored.created_at > 0 and stored.updated_at == stored.created_at
    assert stored == dataclasses.replace(
        record, created_at=stored.created_at, updated_at=stored.updated_at
    )
    assert await store.get_server("s1") == stored
    assert await store.list_servers() == [stored]


async def test_server_members_are_stored_as_json_arrays(database_url: str, store: Store) -> None:
    await store.create_server(server("s1", tools=("a__echo",), prompts=("p", "q")))

    [(tools, resources, prompts)] = raw_rows(
        database_url, "SELECT tools, resources, prompts FROM servers"
    )

    assert [orjson.loads(text) for text in (tools, resources, prompts)] == [
        ["a__echo"],
        [],
        ["p", "q"],
    ]


async def test_create_server_with_an_existing_id_raises_conflict_and_writes_nothing(
    store: Store,
) -> None:
    first = await store.create_server(server("s1", tools=("a__echo",)))
    version = await store.catalogue_version()

    with pytest.raises(Conflict, match=r"^server 's1' already exists$"):
        await store.create_server(server("s1", name="Other"))

    assert await store.list_servers() == [first]
    assert await store.catalogue_version() == version


async def test_update_server_replaces_its_fields_and_keeps_created_at(store: Store) -> None:
    created = await store.create_server(server("s1", tools=("a__echo",)))

    updated = await store.update_server(
        server("s1", name="Renamed", description="new", resources=("file:///r",), created_at=1.0)
    )

    assert (updated.name, updated.description) == ("Renamed", "new")
    assert (updated.tools, updated.resources, updated.prompts) == ((), ("file:///r",), ())
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert await store.get_server("s1") == updated


async def test_update_of_missing_server_raises_not_found_and_keeps_the_version(
    store: Store,
) -> None:
    version = await store.catalogue_version()
    with pytest.raises(NotFound, match=r"^server 'ghost' does not exist$"):
        await store.update_server(server("ghost"))
    assert await store.list_servers() == []
    assert await store.catalogue_version() == version


async def test_delete_server_removes_it_once(store: Store) -> None:
    await store.create_server(server("s1"))
    kept = await store.create_server(server("s2"))

    assert await store.delete_server("s1") is True
    version = await store.catalogue_version()
    assert await store.delete_server("s1") is False

    assert await store.list_servers() == [kept]
    assert await store.catalogue_version() == version


async def test_servers_outlive_the_upstreams_their_members_come_from(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")])
    stored = await store.create_server(server("s1", tools=("a__echo",)))

    await store.delete_upstream("a")

    assert await store.get_server("s1") == stored


# --- versions and consistent reads -----------------------------------------------------------


async def test_every_feature_and_server_write_increments_the_version(store: Store) -> None:
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: store.create_upstream(upstream("a"), [tool("a", "echo")], features("a")),
        lambda: store.update_upstream(
            upstream("a"), features=Features(prompts=[prompt("a", "greet")])
        ),
        lambda: store.update_upstream(upstream("a"), features=features("a")),
        lambda: store.update_resource("file:///a/readme", {"enabled": False}),
        lambda: store.update_resource_template("file:///a/{path}", {"enabled": False}),
        lambda: store.update_prompt("a__greet", {"enabled": False}),
        lambda: store.create_server(server("s1")),
        lambda: store.update_server(server("s1", name="Renamed")),
        lambda: store.delete_server("s1"),
        lambda: store.delete_upstream("a"),
    ]
    versions = [await store.catalogue_version()]
    for write in writes:
        await write()
        versions.append(await store.catalogue_version())

    assert versions == list(range(versions[0], versions[0] + len(writes) + 1))


async def test_load_catalogue_returns_every_kind_of_record_together(store: Store) -> None:
    await store.create_upstream(upstream("a"), [tool("a", "echo")], features("a"))
    await store.create_upstream(upstream("b"), [], features("b"))
    await store.create_server(server("s1", tools=("a__echo",)))

    data = await store.load_catalogue()

    assert data.version == await store.catalogue_version()
    assert data.upstreams == await store.list_upstreams()
    assert data.tools == await store.list_tools()
    assert data.resources == await store.list_resources()
    assert data.templates == await store.list_resource_templates()
    assert data.prompts == await store.list_prompts()
    assert data.servers == await store.list_servers()
    assert (len(data.resources), len(data.templates), len(data.prompts)) == (2, 2, 2)


async def test_load_catalogue_during_feature_writes_always_matches_its_version(
    store: Store,
) -> None:
    """Each version adds one upstream with one of each record, so a torn read shows."""

    async def write() -> None:
        for i in range(12):
            await store.create_upstream(upstream(f"u{i}"), [], features(f"u{i}"))

    async def read() -> list[tuple[int, ...]]:
        seen: list[tuple[int, ...]] = []
        for _ in range(25):
            data = await store.load_catalogue()
            seen.append(
                (
                    data.version,
                    len(data.upstreams),
                    len(data.resources),
                    len(data.templates),
                    len(data.prompts),
                )
            )
            await asyncio.sleep(0)
        return seen

    _, seen = await asyncio.gather(write(), read())
    first_version = seen[0][0] - seen[0][1]
    for version, *counts in seen:
        assert counts == [version - first_version] * 4


async def test_a_second_store_on_the_database_sees_features_and_servers(
    database_url: str, store: Store
) -> None:
    await store.create_upstream(upstream("a"), [], features("a"))
    stored = await store.create_server(server("s1"))

    other = await opened(database_url, SECRET)
    try:
        assert await other.list_prompts() == [prompt("a", "greet")]
        assert await other.get_server("s1") == stored
    finally:
        await other.close()
