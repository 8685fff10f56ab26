"""What a store written by an earlier version holds that this one keeps differently, put
right at every start (each step finds nothing to do once done, so running it again, or in
many workers at once, is harmless):

- **retired secrets**: the key that signed bridged calls' `requestState` was kept in the
  `secrets` table in plaintext; it is now derived from the encryption key
  (`SQLBase.derived_key`), and the stored one is deleted.
- **credentials in upstream URLs**: upstreams registered before `user:password@` was moved
  out of URLs at registration still hold it in their stored `url`; it becomes their
  encrypted `Authorization: Basic` header, as registration makes it today.
"""

from __future__ import annotations

import time

import structlog

from gateway.store import Connection
from gateway.store.crypto import HeaderCipher
from gateway.urlcredentials import credentials_out_of_url

log = structlog.get_logger(__name__)

RETIRED_SECRETS = ("request_state_secret",)
BUMP_VERSION = "UPDATE meta SET value = value + 1 WHERE key = 'catalogue_version'"


async def upgrade(conn: Connection, cipher: HeaderCipher) -> list[str]:
    """Run inside the caller's write transaction; the upstreams whose URL was rewritten."""
    for name in RETIRED_SECRETS:
        await conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
    rows = await conn.fetchall(
        "SELECT name, url, headers_enc FROM upstreams WHERE url LIKE ?", ("%@%",)
    )
    rewritten: list[str] = []
    for name, url, sealed in rows:
        moved = credentials_out_of_url(str(url), cipher.decrypt_headers(str(sealed)))
        if moved is None:
            continue  # an @ in the path or query, not in the authority
        bare, headers = moved
        if not rewritten:
            # Workers reload the catalogue when its version moves.
            await conn.execute(BUMP_VERSION)
        await conn.execute(
            "UPDATE upstreams SET url = ?, headers_enc = ?, updated_at = ? WHERE name = ?",
            (bare, cipher.encrypt_headers(headers), time.time(), name),
        )
        rewritten.append(str(name))
        log.warning(
            "credentials in an upstream's stored URL moved to its encrypted Authorization header",
            upstream=name,
        )
    return rewritten
