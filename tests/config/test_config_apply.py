"""Applying a configuration file as desired state: what it creates, updates and removes,
what it leaves alone, and `config export` writing it back with secrets as references."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.config.apply import apply_at_start
from gateway.config.document import ConfigError, parse
from gateway.config.export import export, secret_variable
from gateway.config.plan import Plan
from gateway.keys import PLUGINS, REGISTRY, STORE
from tests.config.conftest import applier_of
from tests.conftest import Client, GatewayFactory
from tests.plugins.intercepting import Intercepting
from tests.upstreams.processes import RunningUpstream

ENV = {"DOCS_TOKEN": "s3cret-value"}


def config(url: str, *, extra: str = "", tools: str = "", servers: str = "") -> str:
    return f"""\
{extra}
upstreams:
  - name: docs
    url: {url}
    headers:
      Authorization: Bearer ${{DOCS_TOKEN}}
servers:
  - id: support
    description: the support desk
    tools: [docs__echo, docs__add]
{servers}
tools:
  docs__add: {{enabled: false, rate_limit: 5}}
{tools}
"""


async def apply(
    client: Client, text: str, environ: dict[str, str] = ENV, dry: bool = False
) -> Plan:
    return await applier_of(client).apply(parse(text, "gateway.yaml", environ), dry_run=dry)


async def refused(client: Client, text: str) -> str:
    """The message of the ConfigError that applying `text` ends in."""
    with pytest.raises(ConfigError) as caught:
        await apply(client, text)
    return str(caught.value)


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway()


async def test_apply_creates_upstream_server_and_tool_settings_then_finds_nothing_to_change(
    client: Client, own_upstream: RunningUpstream
) -> None:
    plan = await apply(client, config(own_upstream.url))
    assert [c.describe().split(":")[0] for c in plan.changes] == [
        "+ upstream docs",
        "+ server support",
        "~ tool docs__add",
    ]
    store = client.server.app[STORE]
    docs = await store.get_upstream("docs")
    assert docs is not None and docs.headers == {"Authorization": "Bearer s3cret-value"}
    tool = await store.get_tool("docs__add")
    assert tool is not None and (tool.enabled, tool.rate_limit) == (False, 5)
    server = await store.get_server("support")
    assert server is not None and server.tools == ("docs__echo", "docs__add")
    assert "docs__add" not in client.server.app[REGISTRY].catalogue.tools or not (
        client.server.app[REGISTRY].catalogue.tools["docs__add"].record.enabled
    )
    again = await apply(client, config(own_upstream.url))
    assert again.changes == () and again.describe() == "no changes"


async def test_dry_run_prints_the_diff_and_changes_nothing(
    client: Client, own_upstream: RunningUpstream
) -> None:
    plan = await apply(client, config(own_upstream.url), dry=True)
    assert plan.describe().splitlines()[0] == f"+ upstream docs: url='{own_upstream.url}'"
    assert await client.server.app[STORE].list_servers() == []
    assert await client.server.app[STORE].get_upstream("docs") is None


async def test_a_changed_secret_updates_the_upstream_and_the_diff_never_shows_it(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await apply(client, config(own_upstream.url))
    plan = await apply(client, config(own_upstream.url), {"DOCS_TOKEN": "rotated"})
    assert [c.describe() for c in plan.changes] == [
        f"~ upstream docs: headers=<secret>, prefix='docs', session='shared', "
        f"transport='streamable-http', url='{own_upstream.url}'"
    ]
    assert "rotated" not in plan.describe()
    docs = await client.server.app[STORE].get_upstream("docs")
    assert docs is not None and docs.headers == {"Authorization": "Bearer rotated"}


async def test_what_the_file_no_longer_declares_is_removed_and_hand_made_objects_stay(
    client: Client, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    extra = "  - id: extra\n    tools: [docs__echo]\n"
    await apply(client, config(own_upstream.url, servers=extra))
    made = await client.post("/servers", json={"id": "by-hand"}, headers=admin_headers)
    assert made.status == 201
    plan = await apply(client, config(own_upstream.url))
    assert [c.describe() for c in plan.changes] == ["- server extra"]
    ids = [s.id for s in await client.server.app[STORE].list_servers()]
    assert sorted(ids) == ["by-hand", "support"]


async def test_prune_all_also_removes_what_was_added_by_hand(
    client: Client, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    await apply(client, config(own_upstream.url))
    await client.post("/servers", json={"id": "by-hand"}, headers=admin_headers)
    plan = await apply(client, config(own_upstream.url, extra="prune: all"))
    assert [c.describe() for c in plan.changes] == ["- server by-hand"]


async def test_a_tool_left_out_of_the_file_gets_its_default_settings_back(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await apply(client, config(own_upstream.url))
    text = config(own_upstream.url).replace("  docs__add: {enabled: false, rate_limit: 5}\n", "")
    plan = await apply(client, text)
    assert [c.describe() for c in plan.changes] == [
        "~ tool docs__add: enabled=True, rate_limit=None"
    ]
    tool = await client.server.app[STORE].get_tool("docs__add")
    assert tool is not None and tool.enabled and tool.rate_limit is None


async def test_tools_are_curated_from_the_file_and_lose_the_curation_when_left_out(
    client: Client, own_upstream: RunningUpstream
) -> None:
    curated = "  docs__echo: {alias: say, title: Say it, tags: [chat, demo]}\n"
    plan = await apply(client, config(own_upstream.url, tools=curated))
    assert "~ tool docs__echo: alias='say', tags=['chat', 'demo'], title='Say it'" in [
        c.describe() for c in plan.changes
    ]
    store = client.server.app[STORE]
    override = await store.get_tool_override("docs__echo")
    assert override is not None and (override.alias, override.tags) == ("say", ("chat", "demo"))
    assert (await apply(client, config(own_upstream.url, tools=curated))).changes == ()
    exported = await export(store, client.server.app[PLUGINS])
    assert "docs__echo:\n    alias: say\n    title: Say it\n    tags:\n    - chat" in exported
    plan = await apply(client, config(own_upstream.url))
    assert [c.describe() for c in plan.changes] == [
        "~ tool docs__echo: alias=None, tags=[], title=None"
    ]
    assert await store.get_tool_override("docs__echo") is None


async def test_an_upstream_removed_from_the_file_is_removed(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await apply(client, config(own_upstream.url))
    plan = await apply(client, "upstreams: []\nservers: []\n")
    assert [c.describe() for c in plan.changes] == [
        "- upstream docs",
        "- server support",
        "~ tool docs__add: enabled=True, rate_limit=None",
    ]
    assert [u.name for u in await client.server.app[STORE].list_upstreams() if not u.builtin] == []


async def test_a_bad_upstream_field_is_refused_before_anything_is_written(
    client: Client, own_upstream: RunningUpstream
) -> None:
    text = config(own_upstream.url).replace(
        "servers:\n", "  - name: broken\n    url: ftp://nowhere\nservers:\n", 1
    )
    message = await refused(client, text)
    assert message.startswith("gateway.yaml:7: upstream 'broken': 'url' must be")
    assert await client.server.app[STORE].get_upstream("docs") is None


async def test_a_server_naming_a_tool_its_upstream_turns_out_not_to_offer_fails_naming_its_line(
    client: Client, own_upstream: RunningUpstream
) -> None:
    text = config(own_upstream.url, servers="  - id: other\n    tools: [docs__nope]\n")
    assert await refused(client, text) == (
        "gateway.yaml:11: server 'other': not in the catalogue: tool 'docs__nope'"
    )


async def test_names_no_upstream_can_offer_are_refused_before_anything_is_written(
    client: Client, own_upstream: RunningUpstream
) -> None:
    text = config(own_upstream.url, servers="  - id: other\n    tools: [elsewhere__x]\n")
    assert (
        await refused(client, text)
        == "gateway.yaml:11: server 'other': not in the catalogue: elsewhere__x"
    )
    text = config(own_upstream.url, tools="  ghost: {enabled: false}\n")
    assert await refused(client, text) == "gateway.yaml:14: tool 'ghost': no upstream offers it"
    assert await client.server.app[STORE].get_upstream("docs") is None


async def test_export_writes_secrets_as_references_and_applies_back_unchanged(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await apply(client, config(own_upstream.url))
    text = await export(client.server.app[STORE], client.server.app[PLUGINS])
    assert "s3cret-value" not in text
    variable = secret_variable("docs", "Authorization")
    assert variable == "UPSTREAM_DOCS_AUTHORIZATION"
    assert f"Authorization: ${{{variable}}}" in text
    plan = await apply(client, text, {variable: "Bearer s3cret-value"})
    assert plan.changes == ()


async def test_the_gateway_applies_GATEWAY_CONFIG_at_start(
    gateway: GatewayFactory,
    own_upstream: RunningUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(own_upstream.url))
    monkeypatch.setenv("DOCS_TOKEN", "from-the-environment")
    client = await gateway(config_file=str(path))
    catalogue = client.server.app[REGISTRY].catalogue
    assert "docs__echo" in catalogue.tools
    docs = await client.server.app[STORE].get_upstream("docs")
    assert docs is not None and docs.headers == {"Authorization": "Bearer from-the-environment"}


async def test_workers_starting_together_apply_the_file_once(
    client: Client, own_upstream: RunningUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(own_upstream.url))
    app = client.server.app
    plans = await asyncio.gather(
        *(apply_at_start(str(path), ENV, applier_of(client), app[STORE], 30.0) for _ in range(3))
    )
    assert sorted(len(plan.changes) for plan in plans if plan is not None) == [0, 0, 3]


async def test_a_worker_that_waited_for_the_lease_keeps_a_change_made_since_the_apply(
    client: Client, own_upstream: RunningUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(own_upstream.url))
    store = client.server.app[STORE]
    first = await apply_at_start(str(path), ENV, applier_of(client), store, 30.0, "host:1:ab")
    assert first is not None and len(first.changes) == 3
    support = await store.get_server("support")
    assert support is not None
    await store.update_server(replace(support, description="by hand"))
    # The same start (a worker that waited, or one gunicorn started later): nothing applied.
    again = await apply_at_start(str(path), ENV, applier_of(client), store, 30.0, "host:1:ab")
    kept = await store.get_server("support")
    assert again is None and kept is not None and kept.description == "by hand"
    # The next start (another master process) brings the file's description back.
    later = await apply_at_start(str(path), ENV, applier_of(client), store, 30.0, "host:2:ab")
    undone = await store.get_server("support")
    assert later is not None and [c.kind for c in later.changes] == ["server"]
    assert "description='the support desk'" in later.changes[0].describe()
    assert undone is not None and undone.description == "the support desk"


async def test_server_entries_are_checked_as_post_servers_checks_them(
    client: Client, own_upstream: RunningUpstream
) -> None:
    text = config(own_upstream.url, servers="  - id: odd\n    tool_mode: sideways\n")
    assert await refused(client, text) == (
        "gateway.yaml:11: server 'odd': 'tool_mode' must be one of list, search"
    )
    search = "  - id: finder\n    tool_mode: search\n    tags: [demo]\n"
    await apply(client, config(own_upstream.url, servers=search))
    finder = await client.server.app[STORE].get_server("finder")
    assert finder is not None and (finder.tool_mode, finder.tags) == ("search", ("demo",))
    exported = await export(client.server.app[STORE], client.server.app[PLUGINS])
    assert "- id: finder\n  name: finder\n  tags:\n  - demo\n  tool_mode: search" in exported


async def test_server_interceptors_are_checked_applied_and_exported_as_post_servers_takes_them(
    gateway: GatewayFactory, own_upstream: RunningUpstream
) -> None:
    client = await gateway(plugins=[Intercepting()])
    unknown = "  - id: guarded\n    interceptors: [stamp, nosuch]\n"
    message = await refused(client, config(own_upstream.url, servers=unknown))
    assert message.startswith(
        "gateway.yaml:11: server 'guarded': unknown interceptor(s): nosuch; installed: "
    )
    own = "  - id: guarded\n    interceptors: [stamp]\n  - id: bare\n    interceptors: []\n"
    await apply(client, config(own_upstream.url, servers=own))
    store = client.server.app[STORE]
    guarded, bare, support = [await store.get_server(s) for s in ("guarded", "bare", "support")]
    assert guarded is not None and guarded.interceptors == ("stamp",)
    assert bare is not None and bare.interceptors == ()
    assert support is not None and support.interceptors is None
    assert (await apply(client, config(own_upstream.url, servers=own))).changes == ()
    exported = await export(store, client.server.app[PLUGINS])
    assert "- id: guarded\n  name: guarded\n  interceptors:\n  - stamp\n" in exported
    assert "- id: bare\n  name: bare\n  interceptors: []\n" in exported
    assert "- id: support\n  name: support\n  description: the support desk\n" in exported
    header = {secret_variable("docs", "Authorization"): "Bearer s3cret-value"}
    assert (await apply(client, exported, environ=header)).changes == ()
