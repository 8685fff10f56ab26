"""The admin UI tests' helpers: a browser-like client that reads each page's CSRF token
and posts forms from the gateway's own origin, as the UI's own pages do."""

from __future__ import annotations

import re

from aiohttp import ClientResponse

from tests.conftest import Client

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def origin(client: Client) -> str:
    return str(client.make_url("/")).rstrip("/")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def page(client: Client, path: str, status: int = 200) -> str:
    response = await client.get(path, allow_redirects=False)
    text = await response.text()
    assert response.status == status, text
    if status == 200:
        assert response.content_type == "text/html"
    return text


async def post_form(
    client: Client, path: str, fields: dict[str, str], from_page: str | None = None
) -> ClientResponse:
    """Post `fields` with the CSRF token of `from_page` (default: the sign-in page's)."""
    html = await page(client, from_page or "/admin/signin")
    data = {"csrf": csrf_of(html), **fields}
    return await client.post(
        path, data=data, headers={"Origin": origin(client)}, allow_redirects=False
    )


async def refused_form(
    client: Client, path: str, fields: dict[str, str], from_page: str | None = None
) -> str:
    """The page answering a form post the gateway refused (status 422), with its message."""
    response = await post_form(client, path, fields, from_page)
    assert response.status == 422
    return await response.text()


async def sign_in(client: Client, token: str) -> ClientResponse:
    response = await post_form(client, "/admin/signin", {"token": token})
    assert response.status == 303, await response.text()
    return response
