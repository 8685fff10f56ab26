"""The admin UI in-process: sign-in and its cookie session, CSRF and same-origin refusals,
every page served with its content escaped, the admin API's errors shown in the page, and
a tool found, tried, disabled and refused."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from markupsafe import escape

from gateway.keys import ADMIN_UI, CACHE
from gateway.ui.session import COOKIE
from tests.conftest import RUN_MINUTES, Client, GatewayFactory, make_token
from tests.ui.conftest import csrf_of, origin, page, post_form, refused_form, sign_in
from tests.upstreams.processes import RunningUpstream

ADMIN = make_token("root", ("admin",), minutes=RUN_MINUTES)
PAGES = ("/admin/upstreams", "/admin/tools", "/admin/servers", "/admin/health")
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway(auth_required=True)


async def signed_in(client: Client) -> Client:
    await sign_in(client, ADMIN)
    return client


async def add_upstream(client: Client, url: str, name: str = "docs") -> None:
    response = await post_form(
        client, "/admin/upstreams", {"name": name, "url": url}, "/admin/upstreams"
    )
    assert response.status == 303, await response.text()


async def test_pages_send_a_visitor_without_a_session_to_sign_in(client: Client) -> None:
    for path in ("/admin", *PAGES, "/admin/tools/anything"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"] == "/admin/signin"


async def test_sign_in_sets_a_strict_httponly_cookie_and_opens_every_page(client: Client) -> None:
    response = await sign_in(client, ADMIN)
    assert response.headers["Location"] == "/admin/upstreams"
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert not cookie["secure"]
    assert "Signed in as root." in await page(client, "/admin/upstreams")
    for path in PAGES:
        text = await page(client, path)
        assert "Sign out" in text and "Signed in as" not in text


async def test_the_session_keeps_the_principal_never_the_token(client: Client) -> None:
    response = await sign_in(client, ADMIN)
    app: web.Application = client.server.app
    sessions = app[ADMIN_UI].sessions
    key = sessions._cache_key(response.cookies[COOKIE].value)
    raw = await app[CACHE].get(key)
    assert raw is not None
    assert b'"subject":"root"' in raw
    assert ADMIN.encode() not in raw
    assert ADMIN.split(".")[2].encode() not in raw


async def test_sign_in_refuses_a_bad_token_and_a_token_without_admin_scope(
    client: Client,
) -> None:
    bad = await post_form(client, "/admin/signin", {"token": "not-a-jwt"})
    assert bad.status == 401
    assert "Sign-in refused: malformed token" in await bad.text()
    user = await post_form(client, "/admin/signin", {"token": make_token("alice")})
    assert user.status == 403
    assert "no &#39;admin&#39; scope" in await user.text()
    empty = await post_form(client, "/admin/signin", {"token": ""})
    assert empty.status == 400
    assert (await client.get("/admin/tools", allow_redirects=False)).status == 303


async def test_a_form_without_a_valid_csrf_token_is_refused_with_a_403_page(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await signed_in(client)
    attempts = [
        {"name": "docs", "url": own_upstream.url},
        {"name": "docs", "url": own_upstream.url, "csrf": "0" * 64},
        {"name": "docs", "url": own_upstream.url, "csrf": ""},
    ]
    for data in attempts:
        response = await client.post(
            "/admin/upstreams", data=data, headers={"Origin": origin(client)}
        )
        assert response.status == 403
        assert response.content_type == "text/html"
        assert "CSRF token is missing or wrong" in await response.text()
    assert "<strong>docs</strong>" not in await page(client, "/admin/upstreams")


async def test_a_form_from_another_origin_or_none_is_refused_even_with_its_token(
    client: Client,
) -> None:
    await signed_in(client)
    token = csrf_of(await page(client, "/admin/servers"))
    data = {"csrf": token, "id": "evil"}
    cases = [
        ({"Origin": "https://evil.example"}, "another origin"),
        ({}, "names no Origin"),
        ({"Origin": origin(client), "Sec-Fetch-Site": "cross-site"}, "another site"),
    ]
    for headers, reason in cases:
        response = await client.post("/admin/servers", data=data, headers=headers)
        assert response.status == 403
        assert reason in await response.text()
    assert "No virtual servers yet" in await page(client, "/admin/servers")


async def test_a_csrf_token_of_another_browser_does_not_pass(
    client: Client, gateway: GatewayFactory
) -> None:
    await signed_in(client)
    other = await gateway(auth_required=True)
    foreign = csrf_of(await page(other, "/admin/signin"))
    response = await client.post(
        "/admin/servers",
        data={"csrf": foreign, "id": "x"},
        headers={"Origin": origin(client)},
    )
    assert response.status == 403


async def test_sign_out_ends_the_session_for_the_old_cookie_too(client: Client) -> None:
    response = await sign_in(client, ADMIN)
    old = response.cookies[COOKIE].value
    out = await post_form(client, "/admin/signout", {}, "/admin/tools")
    assert out.status == 303
    assert out.headers["Location"] == "/admin/signin"
    assert "Signed out." in await page(client, "/admin/signin")
    client.session.cookie_jar.update_cookies({COOKIE: old})
    assert (await client.get("/admin/tools", allow_redirects=False)).status == 303


async def test_api_errors_appear_in_the_page_as_messages(client: Client) -> None:
    await signed_in(client)
    text = await refused_form(
        client, "/admin/upstreams", {"name": "no spaces allowed"}, "/admin/upstreams"
    )
    assert "&#39;name&#39; must be 1-64 characters" in text
    assert "Traceback" not in text
    assert "&#39;headers&#39; is not valid JSON" in await refused_form(
        client,
        "/admin/upstreams",
        {"name": "x", "url": "http://127.0.0.1:9/mcp", "headers": "{nope"},
        "/admin/upstreams",
    )
    assert "could not discover the upstream" in await refused_form(
        client,
        "/admin/upstreams",
        {"name": "x", "url": "http://127.0.0.1:9/mcp"},
        "/admin/upstreams",
    )
    assert "not in the catalogue: tool &#39;missing__tool&#39;" in await refused_form(
        client, "/admin/servers", {"id": "s1", "tools": "missing__tool"}, "/admin/servers"
    )
    assert "upstream &#39;ghost&#39; does not exist" in await refused_form(
        client, "/admin/upstreams/ghost/remove", {}, "/admin/upstreams"
    )


async def test_a_tool_is_found_tried_disabled_and_then_refused(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await signed_in(client)
    await add_upstream(client, own_upstream.url)
    listing = await page(client, "/admin/upstreams")
    assert "Upstream &#39;docs&#39; added." in listing
    found = await page(client, "/admin/tools?q=return+text")
    assert "docs__echo" in found and "docs__add" not in found
    tool = await page(client, "/admin/tools/docs__echo")
    assert "&#34;text&#34;" in tool  # the input schema, escaped
    call = await post_form(
        client,
        "/admin/tools/docs__echo/call",
        {"tool": "docs__echo", "arguments": '{"text": "hello from the UI"}'},
        "/admin/tools/docs__echo",
    )
    assert call.status == 200
    assert '<pre class="result" id="call-result">hello from the UI</pre>' in await call.text()
    off = await post_form(
        client, "/admin/tools/docs__echo/enabled", {"enabled": "false"}, "/admin/tools/docs__echo"
    )
    assert off.status == 303
    assert "Tool disabled." in await page(client, "/admin/tools/docs__echo")
    refused = await post_form(
        client,
        "/admin/tools/docs__echo/call",
        {"tool": "docs__echo", "arguments": '{"text": "again"}'},
        "/admin/tools/docs__echo",
    )
    text = await refused.text()
    assert "Tool is disabled: docs__echo" in text
    assert "again</pre>" not in text


async def test_bad_arguments_and_refresh_and_remove_show_their_outcome(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await signed_in(client)
    await add_upstream(client, own_upstream.url)
    assert "the arguments must be a JSON object" in await refused_form(
        client,
        "/admin/tools/docs__echo/call",
        {"tool": "docs__echo", "arguments": "[1, 2]"},
        "/admin/tools/docs__echo",
    )
    refreshed = await post_form(client, "/admin/upstreams/docs/refresh", {}, "/admin/upstreams")
    assert refreshed.status == 303
    assert "Upstream &#39;docs&#39; refreshed." in await page(client, "/admin/upstreams")
    removed = await post_form(client, "/admin/upstreams/docs/remove", {}, "/admin/upstreams")
    assert removed.status == 303
    assert "<strong>docs</strong>" not in await page(client, "/admin/upstreams")


async def test_content_from_settings_and_servers_is_escaped_in_every_page(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await signed_in(client)
    await add_upstream(client, own_upstream.url)
    saved = await post_form(
        client,
        "/admin/tools/docs__echo/settings",
        {
            "title": "Echo",
            "description": HOSTILE,
            "tags": "a b",
            "cache_ttl": "",
            "rate_limit": "5",
        },
        "/admin/tools/docs__echo",
    )
    assert saved.status == 303, await saved.text()
    server = await post_form(
        client,
        "/admin/servers",
        {"id": "desk", "description": HOSTILE, "tools": "docs__echo"},
        "/admin/servers",
    )
    assert server.status == 303, await server.text()
    for path in ("/admin/tools", "/admin/tools/docs__echo", "/admin/servers"):
        text = await page(client, path)
        assert HOSTILE not in text
        assert str(escape(HOSTILE)) in text
    detail = await page(client, "/admin/tools/docs__echo")
    assert 'name="rate_limit" inputmode="numeric" value="5"' in detail
    deleted = await post_form(client, "/admin/servers/desk/remove", {}, "/admin/servers")
    assert deleted.status == 303
    assert "No virtual servers yet" in await page(client, "/admin/servers")


async def test_a_setting_the_api_refuses_is_refused_in_the_page(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await signed_in(client)
    await add_upstream(client, own_upstream.url)
    for fields, message in [
        ({"rate_limit": "0"}, "&#39;rate_limit&#39; must be a positive integer"),
        ({"rate_limit": "many"}, "&#39;rate_limit&#39; must be a number"),
        ({"tags": "bad/tag"}, "&#39;tags&#39; must be a list of at most 32 tags"),
    ]:
        assert message in await refused_form(
            client, "/admin/tools/docs__echo/settings", fields, "/admin/tools/docs__echo"
        )


async def test_health_page_shows_catalogue_upstreams_and_metrics(
    client: Client, own_upstream: RunningUpstream
) -> None:
    await signed_in(client)
    await add_upstream(client, own_upstream.url)
    await post_form(
        client,
        "/admin/tools/docs__add/call",
        {"tool": "docs__add", "arguments": '{"a": 1, "b": 2}'},
        "/admin/tools/docs__add",
    )
    text = await page(client, "/admin/health")
    assert "tools (catalogue v" in text
    assert "<td>docs</td>" in text
    assert "gateway_cache_operations_total" in text
    assert "<code>gateway_tool_call" in text
    assert re.search(r"<span>[^<]*upstream=docs[^<]*</span> <b>1</b>", text)


async def test_with_auth_off_the_ui_is_open_but_forms_still_need_their_token(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(auth_required=False)
    text = await page(client, "/admin/servers")
    assert "anonymous" in text and "Sign out" not in text
    assert (await client.get("/admin/signin", allow_redirects=False)).status == 303
    refused = await client.post(
        "/admin/servers", data={"id": "x"}, headers={"Origin": origin(client)}
    )
    assert refused.status == 403
    made = await post_form(client, "/admin/servers", {"id": "open"}, "/admin/servers")
    assert made.status == 303
    assert "Virtual server &#39;open&#39; created." in await page(client, "/admin/servers")


async def test_cookie_is_secure_behind_an_https_public_url(gateway: GatewayFactory) -> None:
    client = await gateway(auth_required=True, public_url="https://gateway.example")
    html_page = await client.get("/admin/signin")
    assert html_page.cookies[COOKIE]["secure"] is True


async def test_admin_ui_false_serves_no_ui(gateway: GatewayFactory) -> None:
    client = await gateway(auth_required=True, admin_ui=False)
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    assert (await client.get("/admin/signin", headers=bearer)).status == 404


async def test_the_stylesheet_is_served_to_anyone(client: Client) -> None:
    response = await client.get("/admin/static/ui.css")
    assert response.status == 200
    assert response.content_type == "text/css"
    assert ".card" in await response.text()


async def test_revoking_the_token_ends_its_sign_in_at_the_next_page(client: Client) -> None:
    token = make_token("ops", ("admin",), minutes=30)
    await sign_in(client, token)
    assert "Sign out" in await page(client, "/admin/tools")
    other = {"Authorization": f"Bearer {ADMIN}"}
    revoked = await client.post("/tokens/revoke", json={"token": token}, headers=other)
    assert revoked.status == 200, await revoked.text()
    response = await client.get("/admin/tools", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin/signin"


async def test_tokens_are_issued_once_listed_and_revoked_from_the_page(client: Client) -> None:
    await signed_in(client)
    assert 'href="/admin/tokens"' in await page(client, "/admin/upstreams")
    made = await post_form(
        client,
        "/admin/tokens",
        {"name": "ci <pipeline>", "subject": "ci", "scopes": "admin", "days": "1"},
        "/admin/tokens",
    )
    assert made.status == 200
    text = await made.text()
    token = re.search(r'<pre class="result" id="issued-token">([^<]+)</pre>', text)
    assert token is not None
    assert "ci &lt;pipeline&gt;" in text
    bearer = {"Authorization": f"Bearer {token.group(1)}"}
    assert (await client.get("/upstreams", headers=bearer)).status == 200
    listing = await page(client, "/admin/tokens")
    assert token.group(1) not in listing
    ident = re.search(r'action="/admin/tokens/([^/"]+)/revoke"', listing)
    assert ident is not None
    revoked = await post_form(client, f"/admin/tokens/{ident.group(1)}/revoke", {}, "/admin/tokens")
    assert revoked.status == 303
    after = await page(client, "/admin/tokens")
    assert "Token revoked" in after and '<span class="pill down">revoked</span>' in after
    assert (await client.get("/upstreams", headers=bearer)).status == 401


async def test_a_token_the_api_refuses_is_refused_in_the_page(client: Client) -> None:
    await signed_in(client)
    for fields, message in [
        ({"name": ""}, "&#39;name&#39; must be a string of 1-100 printable characters"),
        ({"name": "x", "days": "100000"}, "exceeds MAX_TOKEN_LIFETIME"),
        ({"name": "x", "days": "soon"}, "&#39;days&#39; must be a number"),
    ]:
        assert message in await refused_form(client, "/admin/tokens", fields, "/admin/tokens")
    assert "no managed token with id &#39;nope&#39;" in await refused_form(
        client, "/admin/tokens/nope/revoke", {}, "/admin/tokens"
    )


async def test_without_managed_tokens_there_is_no_tokens_page(gateway: GatewayFactory) -> None:
    client = await gateway(auth_required=False)
    assert 'href="/admin/tokens"' not in await page(client, "/admin/upstreams")
    assert "keeps no managed tokens" in await page(client, "/admin/tokens", 404)
