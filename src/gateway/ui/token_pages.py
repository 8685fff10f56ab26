"""The admin UI's managed-token page: list, issue and revoke the authenticator's tokens.

The page exists only when the authenticator keeps managed tokens (`MANAGED_TOKENS`);
a revoked token is refused by every worker at once.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.keys import MANAGED_TOKENS
from gateway.ui.pages import EXPECTED, Visit, failure, form, number_field, page


async def _tokens_page(
    current: Visit, status: int = 200, errors: list[str] | None = None, **extra: Any
) -> web.Response:
    managed = current.request.app.get(MANAGED_TOKENS)
    if managed is None:
        message = "this gateway's authenticator keeps no managed tokens (AUTH_TYPE=jwt does)"
        return current.render("problem.html", 404, title="No tokens", message=message)
    tokens = sorted(await managed.listed(), key=lambda t: -float(t.get("created_at", 0)))
    return current.render("tokens.html", status, tokens=tokens, errors=errors or [], **extra)


async def _tokens(current: Visit) -> web.StreamResponse:
    return await _tokens_page(current)


def _token_body(fields: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": fields.get("name", "").strip(),
        "scopes": fields.get("scopes", "").replace(",", " ").split(),
        "servers": fields.get("servers", "").replace(",", " ").split(),
    }
    if fields.get("subject", "").strip():
        body["subject"] = fields["subject"].strip()
    days = number_field(fields, "days", float)
    if days is not None:
        body["expires_in"] = days * 86400
    return body


async def _issue_token(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    managed = current.request.app.get(MANAGED_TOKENS)
    if managed is None:
        return await _tokens_page(current)
    try:
        issued = await managed.issue(_token_body(fields))
    except ValueError as exc:
        return await _tokens_page(current, 422, [str(exc)], entered=fields)
    except EXPECTED as exc:
        return await _tokens_page(current, 422, [failure(exc)], entered=fields)
    return await _tokens_page(current, issued=issued)


async def _revoke_token(current: Visit, fields: dict[str, str]) -> web.StreamResponse:
    managed = current.request.app.get(MANAGED_TOKENS)
    ident = current.request.match_info["id"]
    if managed is None or await managed.revoke(ident) is None:
        return await _tokens_page(current, 422, [f"no managed token with id {ident!r}"])
    return current.redirect("/admin/tokens", "Token revoked; every worker refuses it now.")


def add_routes(router: web.UrlDispatcher) -> None:
    """The managed-token page and its forms, under `/admin/tokens`."""
    router.add_get("/admin/tokens", page(_tokens))
    router.add_post("/admin/tokens", form(_issue_token))
    router.add_post("/admin/tokens/{id}/revoke", form(_revoke_token))
