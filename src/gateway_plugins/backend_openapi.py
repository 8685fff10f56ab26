"""The `openapi` backend: a REST API described by an OpenAPI 3.0 or 3.1 document, each
operation a tool.

Registration: `{"name": "pets", "transport": "openapi", "url": "https://host/openapi.json"}`,
or the document inline as `"spec"` (then `url` may be left out); `"base_url"` overrides the
document's servers, and `"headers"` (encrypted at rest like every upstream's) go with every
request, the document's fetch included. How operations become tools, and which are skipped,
is in `gateway_plugins.openapi.mapping`; the skipped ones, each with its reason, are the
upstream's discovery notes, shown in the registration's answer.

Each worker's backend loads the document once, on first use (fetching it again when it is
given by URL), and calls the API over one keep-alive aiohttp session whose connector checks
every address (`gateway.netguard`), never following redirects, within the call's timeout
and reading at most `MAX_UPSTREAM_RESPONSE_BYTES` of a response.

With `"oauth"` its requests carry an access token (`gateway.upstream_oauth`). With the
token-exchange grant, each tool call carries the token exchanged for its caller's own,
while the gateway's own requests (the document, the health check) carry the client's: an
API holds no session, so it needs no per-client sessions for that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import aiohttp
import orjson
from yarl import URL

from gateway import upstream_oauth
from gateway.mcpclient.bounded import ERROR_BODY_BYTES, Bounds, TooLarge, read_bounded
from gateway.mcpclient.http import client_error, new_http_session
from gateway.netguard import AddressPolicy, AddressRefused
from gateway.plugin import (
    JSON,
    BackendError,
    BackendSpec,
    Registrar,
    Settings,
    SettingSpec,
    ToolDef,
    UpstreamConfig,
    hookimpl,
    integer,
)
from gateway.token_exchange import OnBehalf
from gateway_plugins.openapi.calls import (
    CallRefused,
    Request,
    build_request,
    error_result,
    result,
)
from gateway_plugins.openapi.document import (
    TOO_DEEP,
    InvalidDocument,
    Unreachable,
    fetch,
    parse,
    validate,
)
from gateway_plugins.openapi.mapping import Api, map_api, server_url

MAX_SPEC_BYTES = SettingSpec(
    "OPENAPI_MAX_SPEC_BYTES",
    8_388_608,
    integer(minimum=1024),
    "largest OpenAPI document an openapi upstream may have, fetched or inline (bytes)",
)
MAX_TOOLS = SettingSpec(
    "OPENAPI_MAX_TOOLS",
    1000,
    integer(minimum=1),
    "most operations of one openapi upstream that become tools; the rest are skipped",
)
MAX_TOOL_NAME = 128
"""MCP's longest tool name, which the upstream's prefix shares."""
NOTES_SKIPPED = 200
"""How many skipped operations the notes list; `skipped_total` counts them all."""


def check_options(options: Mapping[str, Any], url: str, settings: Settings) -> JSON:
    """The `spec`, `base_url` and `oauth` fields: a document given inline is checked here, so
    that a bad one is the admin's error at once."""
    checked: JSON = {}
    if options.get(upstream_oauth.FIELD) is not None:
        checked[upstream_oauth.FIELD] = upstream_oauth.check_oauth(options[upstream_oauth.FIELD])
    if "base_url" in options:
        base = options["base_url"]
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            raise ValueError("'base_url' must be an http:// or https:// URL")
        checked["base_url"] = base
    if "spec" in options:
        spec = options["spec"]
        if not isinstance(spec, dict | str):
            raise ValueError("'spec' must be the OpenAPI document: an object, or JSON or YAML text")
        try:
            raw = spec if isinstance(spec, str) else orjson.dumps(spec)
        except orjson.JSONEncodeError:  # orjson writes at most 254 levels
            raise ValueError(f"'spec': {TOO_DEEP}") from None
        try:
            doc = parse(raw, settings.plugin_value(MAX_SPEC_BYTES))
            validate(doc)
        except InvalidDocument as exc:
            raise ValueError(f"'spec': {exc}") from None
        checked["spec"] = doc
    elif not url:
        raise ValueError("give 'url' (where the OpenAPI document is) or the document as 'spec'")
    return checked


class OpenApiBackend:
    """A `Backend` for one REST API."""

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.name = upstream.name
        self.url = upstream.url
        self.options = upstream.options
        self.headers = upstream_oauth.sent_headers(upstream.headers)
        self.guard = AddressPolicy.of(settings)
        self.oauth = upstream_oauth.TokenSource.of(
            self.name, upstream.options, upstream.headers, self.guard
        )
        """The API's OAuth access token, when its registration has `oauth`."""
        self.on_behalf: OnBehalf | None = None
        """With the token-exchange grant, the token of the caller of a tool call."""
        if self.oauth is not None and self.oauth.on_behalf is not None:
            self.on_behalf = OnBehalf(self.name, self.oauth.grant, self.oauth.on_behalf)
        self.bounds = Bounds.of(settings)
        self.max_spec_bytes = settings.plugin_value(MAX_SPEC_BYTES)
        self.max_tools = settings.plugin_value(MAX_TOOLS)
        sep = settings.tool_name_separator
        self.name_room = MAX_TOOL_NAME - (len(upstream.prefix) + len(sep) if upstream.prefix else 0)
        self.load_timeout = settings.tool_timeout
        self._http: aiohttp.ClientSession | None = None
        self._api: tuple[Api, str] | None = None
        self._loading = asyncio.Lock()

    async def start(self) -> None:
        self._http = new_http_session(self.guard)

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        if self.oauth is not None:
            await self.oauth.close()

    async def _headers(self, refused: str | None = None) -> dict[str, str]:
        """The headers every request carries: the configured ones and the OAuth token."""
        if self.oauth is None:
            return self.headers
        return {**self.headers, "Authorization": await self.oauth.header(refused)}

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        return self._http

    # --- the document ---------------------------------------------------------------------

    async def _load(self) -> tuple[Api, str]:
        """The API's tools and its base URL, loaded once."""
        if self._api is not None:
            return self._api
        async with self._loading:
            if self._api is None:
                try:
                    async with asyncio.timeout(self.load_timeout):
                        self._api = await self._read()
                except TimeoutError:
                    raise BackendError(
                        f"upstream {self.name!r}: the OpenAPI document was not loaded within "
                        f"{self.load_timeout:g}s"
                    ) from None
        return self._api

    async def _read(self) -> tuple[Api, str]:
        where = f"upstream {self.name!r}"
        spec = self.options.get("spec")
        try:
            if isinstance(spec, dict):
                doc = spec
            else:
                headers = await self._headers()
                raw = await fetch(self._client(), self.url, headers, self.max_spec_bytes)
                doc = await asyncio.to_thread(parse, raw, self.max_spec_bytes)
                await asyncio.to_thread(validate, doc)
        except (InvalidDocument, Unreachable) as exc:
            raise BackendError(f"{where}: {exc}") from None
        api = await asyncio.to_thread(map_api, doc, self.name_room, self.max_tools)
        base = self._base_url(doc)
        try:
            await self.guard.check_url(base)
        except AddressRefused as exc:
            raise BackendError(f"{where}: the API's base URL {base}: {exc}") from None
        return api, base

    def _base_url(self, doc: Mapping[str, Any]) -> str:
        base = self.options.get("base_url")
        if isinstance(base, str) and base:
            return base
        servers = doc.get("servers")
        # OpenAPI: without servers, the API is at "/" of the document's origin.
        server = server_url(servers[0]) if isinstance(servers, list) and servers else "/"
        # A relative server URL is relative to where the document is.
        base = urljoin(self.url, server) if self.url else server
        if not base.startswith(("http://", "https://")):
            raise BackendError(
                f"upstream {self.name!r}: the document names no absolute server URL; "
                "give 'base_url'"
            )
        return base

    # --- the Backend contract -------------------------------------------------------------

    async def list_tools(self) -> list[ToolDef]:
        """The tools; once they are loaded, also a check that the API answers at all, since
        the leader's health checks list the tools of each live backend."""
        loaded = self._api is not None
        api, base = await self._load()
        if loaded:
            await self._probe(base)
        return [op.tool for op in api.operations.values()]

    async def _probe(self, base: str) -> None:
        # Any HTTP answer shows the API is up; many answer HEAD on their base with 404 or 405.
        try:
            async with self._client().head(
                base, headers=await self._headers(), allow_redirects=False
            ) as resp:
                resp.release()
        except aiohttp.ClientError as exc:
            raise client_error(self.name, base, "HEAD (health check)", exc) from None

    def discovery_notes(self) -> JSON:
        if self._api is None:
            return {}
        api, base = self._api
        notes: JSON = {"base_url": base, "operations": len(api.operations)}
        if api.skipped:
            notes["skipped"] = [s.view() for s in api.skipped[:NOTES_SKIPPED]]
            notes["skipped_total"] = len(api.skipped)
        return notes

    async def _call_headers(self, refused: str | None) -> dict[str, str]:
        """The headers of a tool call: with token exchange, its caller's token."""
        if self.on_behalf is None:
            return await self._headers(refused)
        return {**self.headers, "Authorization": await self.on_behalf.header(refused)}

    async def _send(self, request: Request) -> aiohttp.ClientResponse:
        """The API's response to `request`; with OAuth, sent once more with a fresh token
        when the API answers 401 (a token revoked or expired early)."""
        refused: str | None = None
        while True:
            headers = {
                "Accept": "application/json, */*;q=0.8",
                **await self._call_headers(refused),
                **request.headers,
            }
            resp = await self._client().request(
                request.method,
                URL(request.url, encoded=True),
                headers=headers,
                data=request.body,
                allow_redirects=False,
            )
            if resp.status != 401 or self.oauth is None or refused is not None:
                return resp
            resp.release()
            refused = headers["Authorization"]

    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        api, base = await self._load()
        op = api.operations.get(name)
        if op is None:
            raise BackendError(f"upstream {self.name!r} has no operation for tool {name!r}")
        # The admin's base_url wins over the servers an operation names for itself.
        if op.server and not self.options.get("base_url"):
            base = urljoin(base, op.server)
        try:
            request = build_request(op, base, arguments)
        except CallRefused as exc:
            return error_result(str(exc))
        try:
            async with asyncio.timeout(timeout):
                async with await self._send(request) as resp:
                    if 200 <= resp.status < 300:
                        body = await read_bounded(
                            resp.content, self.bounds.response_bytes, self.bounds.reply_too_large()
                        )
                    else:
                        body = await _read_start(resp.content, ERROR_BODY_BYTES)
                    return result(
                        op, resp.status, resp.reason or "", resp.content_type, resp.charset, body
                    )
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer {op.label} within {timeout:g}s"
            ) from None
        except TooLarge as exc:
            raise BackendError(f"upstream {self.name!r} sent {exc} to {op.label}") from None
        except aiohttp.ClientError as exc:
            raise client_error(self.name, base, op.label, exc) from None


async def _read_start(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At least the first `limit` bytes of a body (all of a shorter one): an error's result
    shows only its start, so the rest is never read."""
    parts: list[bytes] = []
    size = 0
    while size < limit and (data := await content.readany()):
        parts.append(data)
        size += len(data)
    return b"".join(parts)


@hookimpl(trylast=True)
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    register.add(MAX_SPEC_BYTES)
    register.add(MAX_TOOLS)


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="openapi",
            transport="openapi",
            factory=OpenApiBackend,
            description="A REST API described by an OpenAPI 3.0 or 3.1 document; "
            "each operation is a tool.",
            fields=frozenset({"spec", "base_url", upstream_oauth.FIELD}),
            sessionless=True,
            check_options=check_options,
            needs_url=False,
        )
    )
