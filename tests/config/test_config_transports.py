"""Upstream entries of any transport go through the validation of `POST /upstreams`: a stdio
upstream is declared with its own fields (command, args, env), its `env` values are
credentials that must come from `${VAR}` references, and export writes them back as such."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.document import ConfigError, parse
from gateway.config.export import export
from gateway.keys import PLUGINS, STORE
from tests.config.conftest import applier_of
from tests.conftest import Client, GatewayFactory
from tests.stdio.conftest import PYTHON, SERVER, SLOW


def stdio_config(env_value: str) -> str:
    return f"""\
upstreams:
  - name: local
    transport: stdio
    command: {PYTHON}
    args: [{SERVER}]
    env:
      API_KEY: {env_value}
"""


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    settings: dict[str, Any] = {
        "plugin_values": {"STDIO_COMMANDS": (PYTHON,), "STDIO_MODE": "per-worker"},
        "tool_timeout": SLOW,
    }
    return await gateway(**settings)


async def test_a_stdio_env_value_written_in_clear_is_refused_before_anything_runs(
    client: Client,
) -> None:
    desired = parse(stdio_config("plain-key"), "gateway.yaml", {})
    with pytest.raises(ConfigError) as caught:
        await applier_of(client).apply(desired)
    assert str(caught.value) == (
        "gateway.yaml:2: upstream 'local': the value of env 'API_KEY' is written in clear; "
        "it is a secret, so write it as a ${ENV_VAR} reference"
    )
    assert [u for u in await client.server.app[STORE].list_upstreams() if not u.builtin] == []


async def test_a_stdio_upstream_is_declared_with_its_own_fields_and_exported_with_references(
    client: Client,
) -> None:
    environ = {"LOCAL_KEY": "k-123"}
    desired = parse(stdio_config("${LOCAL_KEY}"), "gateway.yaml", environ)
    plan = await applier_of(client).apply(desired)
    assert [c.describe().split(":")[0] for c in plan.changes] == ["+ upstream local"]
    record = await client.server.app[STORE].get_upstream("local")
    assert record is not None and record.headers == {"API_KEY": "k-123"}
    assert record.options["command"] == PYTHON
    again = await applier_of(client).apply(parse(stdio_config("${LOCAL_KEY}"), "g.yaml", environ))
    assert again.changes == ()
    text = await export(client.server.app[STORE], client.server.app[PLUGINS])
    assert "k-123" not in text
    assert "API_KEY: ${UPSTREAM_LOCAL_API_KEY}" in text
    assert "headers" not in text
    back = parse(text, "exported.yaml", {"UPSTREAM_LOCAL_API_KEY": "k-123"})
    assert (await applier_of(client).apply(back, dry_run=True)).changes == ()
