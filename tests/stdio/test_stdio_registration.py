"""Registering stdio upstreams on a gateway: the allow-list, the admin scope, env kept
secret, the process's status, and real third-party servers (the PyPI time server, the
official npm `everything` and `filesystem` servers)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory, error_message, rpc
from tests.stdio.conftest import PYTHON, SERVER, SLOW, gone, left_running, text_of

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")


def allow(*commands: str, mode: str = "shared") -> dict[str, Any]:
    return {
        "plugin_values": {"STDIO_COMMANDS": commands, "STDIO_MODE": mode},
        "tool_timeout": SLOW,
    }


def own_server(name: str = "own", **extra: Any) -> dict[str, Any]:
    return {"name": name, "transport": "stdio", "command": PYTHON, "args": [SERVER], **extra}


async def call(client: Any, headers: dict[str, str], tool: str, **arguments: Any) -> Any:
    reply = await rpc(client, "tools/call", {"name": tool, "arguments": arguments}, headers)
    return reply["result"]


async def test_no_stdio_upstream_until_the_operator_lists_its_command(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway()
    response = await client.post("/upstreams", json=own_server(), headers=admin_headers)
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "STDIO_COMMANDS" in message and "no command may run" in message


async def test_a_command_not_listed_is_refused_naming_the_list(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(**allow("mcp-server-time"))
    response = await client.post("/upstreams", json=own_server(), headers=admin_headers)
    assert "mcp-server-time" in await error_message(response, 422)


async def test_only_the_admin_scope_registers_a_stdio_upstream(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(**allow(PYTHON))
    response = await client.post("/upstreams", json=own_server(), headers=user_headers)
    assert response.status == 403


async def test_bad_stdio_fields_are_refused_with_a_reason(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(**allow(PYTHON, "/nonexistent/server"))
    cases = {
        "takes no 'url'": own_server(url="http://127.0.0.1:1/mcp"),
        "'args' must be a list": own_server(args="--verbose"),
        "'cwd' must be the absolute path": own_server(cwd="relative/dir"),
        "'env' must be an object of string values": own_server(env={"N": 1}),
        "not an executable on the gateway's PATH": own_server(command="/nonexistent/server"),
        "takes no 'headers'": own_server(headers={"X-Key": "v"}),
    }
    for expected, body in cases.items():
        response = await client.post("/upstreams", json=body, headers=admin_headers)
        assert expected in await error_message(response, 422)


async def test_a_server_that_exits_at_once_fails_registration_with_its_exit_status(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(**allow(PYTHON))
    body = own_server("broken", args=[SERVER, "--misbehave", "exit"])
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert "exited with status 3" in await error_message(response, 502)
    assert (await client.get("/upstreams/broken", headers=admin_headers)).status == 404


async def test_env_is_encrypted_at_rest_shown_by_name_and_reaches_the_process(
    gateway: GatewayFactory, admin_headers: dict[str, str], sqlite_url: str
) -> None:
    client = await gateway(**allow(PYTHON))
    secret = "s3cr3t-value-for-the-stdio-env"
    body = own_server(env={"API_KEY": secret}, cwd=str(Path(SERVER).parent))
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert response.status == 201, await response.text()
    view = await (await client.get("/upstreams/own", headers=admin_headers)).json()
    assert secret not in str(view)
    assert view["options"]["env"] == ["API_KEY"]
    assert view["options"]["command"] == PYTHON
    assert view["status"]["state"] in {"running", "starting"}
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    assert secret.encode() not in await asyncio.to_thread(database.read_bytes)
    result = await call(client, admin_headers, "own__env", name="API_KEY")
    assert text_of(result) == secret


async def test_a_call_when_the_process_dies_is_an_error_result_and_status_counts_the_restart(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(**allow(PYTHON))
    response = await client.post("/upstreams", json=own_server(), headers=admin_headers)
    assert response.status == 201, await response.text()
    first = text_of(await call(client, admin_headers, "own__pid"))
    died = await call(client, admin_headers, "own__die")
    assert died["isError"] is True
    assert "exited with status 7" in text_of(died)
    assert await gone(int(first))
    second = text_of(await call(client, admin_headers, "own__pid"))
    assert second != first
    status = (await (await client.get("/upstreams/own", headers=admin_headers)).json())["status"]
    assert status["restarts"] == 1
    assert status["last_exit"]["status"] == 7
    assert status["state"] == "running"


async def test_the_time_server_from_pypi(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(**allow(TIME_SERVER))
    body = {
        "name": "clock",
        "transport": "stdio",
        "command": TIME_SERVER,
        "args": ["--local-timezone", "UTC"],
    }
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert response.status == 201, await response.text()
    result = await call(
        client,
        admin_headers,
        "clock__convert_time",
        source_timezone="Europe/Berlin",
        time="09:00",
        target_timezone="Europe/Dublin",
    )
    assert result["isError"] is False, result
    assert "08:00" in text_of(result)


async def test_the_npm_everything_server_over_stdio(
    gateway: GatewayFactory, admin_headers: dict[str, str], npm_servers: Path
) -> None:
    command = str(npm_servers / "mcp-server-everything")
    client = await gateway(**allow(command))
    body = {"name": "every", "transport": "stdio", "command": command, "args": ["stdio"]}
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert response.status == 201, await response.text()
    result = await call(client, admin_headers, "every__echo", message="through the gateway")
    assert "through the gateway" in text_of(result)
    listed = await rpc(client, "tools/list", {}, admin_headers)
    names = {tool["name"] for tool in listed["result"]["tools"]}
    assert "every__echo" in names and len(names) > 3


async def test_the_npm_filesystem_server_on_a_temporary_folder(
    gateway: GatewayFactory, admin_headers: dict[str, str], npm_servers: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note.txt").write_text("written by the test")
    command = str(npm_servers / "mcp-server-filesystem")
    client = await gateway(**allow(command))
    body = {"name": "files", "transport": "stdio", "command": command, "args": [str(shared)]}
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert response.status == 201, await response.text()
    path = str(shared / "note.txt")
    result = await call(client, admin_headers, "files__read_text_file", path=path)
    assert result.get("isError") is not True, result
    assert text_of(result) == "written by the test"
    outside = await call(client, admin_headers, "files__read_text_file", path="/etc/hostname")
    assert outside["isError"] is True


async def test_a_server_hanging_in_initialize_fails_registration_and_is_not_left_running(
    gateway: GatewayFactory, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    settings = allow(PYTHON)
    settings["plugin_values"]["STDIO_INITIALIZE_TIMEOUT"] = 1.0
    client = await gateway(**settings)
    marker = str(tmp_path / "hanging-marker")
    body = own_server("hangs", args=[SERVER, "--misbehave", "hang", marker])
    response = await client.post("/upstreams", json=body, headers=admin_headers)
    assert "did not answer initialize within 1s" in await error_message(response, 502)
    # The host keeps an unused process a few seconds for the workers, then stops it.
    assert not await left_running(marker, within=30.0)
