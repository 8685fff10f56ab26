"""An upstream's tool input schemas check the arguments of calls, and nothing more: a schema
the gateway cannot use leaves the arguments to the upstream, and a `$ref` never makes the
gateway fetch anything."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.backends.conftest import served
from tests.conftest import GatewayFactory, rpc

JSON = dict[str, Any]


def upstream_app(tools: list[JSON], fetched: list[str]) -> web.Application:
    """A Streamable HTTP upstream offering `tools`, each call answered with its arguments;
    any GET elsewhere is recorded in `fetched`."""

    async def mcp(request: web.Request) -> web.Response:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            info = {"name": "schemas", "version": "1"}
            result: JSON = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}}
            result["serverInfo"] = info
        elif message["method"] == "tools/list":
            result = {"tools": tools}
        elif message["method"] == "tools/call":
            text = str(message["params"].get("arguments"))
            result = {"content": [{"type": "text", "text": text}]}
        else:
            error = {"code": -32601, "message": "Method not found"}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "error": error})
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})

    async def elsewhere(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.json_response({"type": "string"})

    async def no_stream(request: web.Request) -> web.Response:
        return web.Response(status=405)

    app = web.Application()
    app.router.add_post("/mcp", mcp)
    app.router.add_get("/mcp", no_stream)
    app.router.add_get("/{tail:.*}", elsewhere)
    return app


async def test_a_ref_outside_the_schema_is_never_fetched_and_leaves_arguments_to_the_upstream(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    fetched: list[str] = []
    tools: list[JSON] = []
    async with served(upstream_app(tools, fetched)) as url:
        for name, ref in [("web", f"{url}/internal/schema.json"), ("file", "file:///etc/passwd")]:
            schema = {"type": "object", "properties": {"a": {"$ref": ref}}}
            tools.append({"name": name, "inputSchema": schema})
        schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
        tools.append({"name": "dangling", "inputSchema": schema})
        client = await gateway()
        body = {"name": "up", "url": f"{url}/mcp"}
        response = await client.post("/upstreams", json=body, headers=admin_headers)
        assert response.status == 201, await response.text()
        for tool in ("up__web", "up__file", "up__dangling"):
            params = {"name": tool, "arguments": {"a": 1}}
            answer = await rpc(client, "tools/call", params, admin_headers)
            assert answer["result"]["content"][0]["text"] == "{'a': 1}", answer
    assert fetched == []


async def test_a_local_ref_still_checks_the_arguments(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/text"}},
        "$defs": {"text": {"type": "string"}},
    }
    fetched: list[str] = []
    async with served(upstream_app([{"name": "local", "inputSchema": schema}], fetched)) as url:
        client = await gateway()
        body = {"name": "up", "url": f"{url}/mcp"}
        response = await client.post("/upstreams", json=body, headers=admin_headers)
        assert response.status == 201, await response.text()
        params = {"name": "up__local", "arguments": {"a": 1}}
        answer = await rpc(client, "tools/call", params, admin_headers)
        assert answer["error"]["code"] == -32602
        assert "field 'a': 1 is not of type 'string'" in answer["error"]["message"]
        params = {"name": "up__local", "arguments": {"a": "fine"}}
        answer = await rpc(client, "tools/call", params, admin_headers)
        assert answer["result"]["content"][0]["text"] == "{'a': 'fine'}"
