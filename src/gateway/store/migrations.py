"""The schema, as ordered versioned migrations, and the runner both stores share.

Each migration is plain SQL that SQLite and PostgreSQL both accept; the only dialect
differences are the column types written as `{blob}` and `{serial_pk}`. Applied versions
are recorded in `schema_migrations`. Add a migration by appending to `MIGRATIONS` with the
next version; never edit one that has shipped.

Many processes may start at once (gunicorn workers, several instances). `migrate()` runs
inside the caller's write transaction: on SQLite that is `BEGIN IMMEDIATE`, which admits one
writer, and on PostgreSQL it first takes a transaction-scoped advisory lock. Either way the
first process applies the migrations and the others then find them recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.store import Connection

# Any fixed 64-bit number works; it only has to be the same in every gateway process.
# The lock is database-wide, so gateways in different schemas of one database migrate one
# after another, which is harmless.
ADVISORY_LOCK_KEY = 0x6D63_7067_775F_6462  # "mcpgw_db" in ASCII

DIALECT_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "blob": "BLOB",
        # AUTOINCREMENT keeps ids growing after old rows are purged, which pollers rely on.
        "serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
    "postgresql": {"blob": "BYTEA", "serial_pk": "BIGSERIAL PRIMARY KEY"},
}

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]

    def sql(self, dialect: str) -> list[str]:
        types = DIALECT_TYPES[dialect]
        return [statement.format_map(types) for statement in self.statements]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "upstreams, tools and the catalogue version",
        (
            """
            CREATE TABLE upstreams (
                name TEXT PRIMARY KEY,
                transport TEXT NOT NULL,
                url TEXT NOT NULL DEFAULT '',
                prefix TEXT NOT NULL DEFAULT '',
                headers_enc TEXT NOT NULL DEFAULT '',
                builtin BOOLEAN NOT NULL DEFAULT FALSE,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE tools (
                name TEXT PRIMARY KEY,
                upstream TEXT NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
                original_name TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                title TEXT,
                input_schema TEXT NOT NULL,
                output_schema TEXT,
                annotations TEXT,
                enabled BOOLEAN NOT NULL DEFAULT TRUE,
                cache_ttl DOUBLE PRECISION,
                rate_limit INTEGER,
                UNIQUE (upstream, original_name)
            )
            """,
            # Integers only: strings belong in `secrets`.
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            # Starts at 1 so that a worker can use 0 for "never loaded".
            "INSERT INTO meta (key, value) VALUES ('catalogue_version', 1)",
        ),
    ),
    Migration(
        2,
        "generated secrets",
        ("CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",),
    ),
    Migration(
        3,
        "database cache entries and the SQLite pub/sub change log",
        (
            """
            CREATE TABLE cache_entries (
                key TEXT PRIMARY KEY,
                value {blob} NOT NULL,
                expires_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX cache_entries_expires_at ON cache_entries (expires_at)",
            """
            CREATE TABLE cache_messages (
                id {serial_pk},
                channel TEXT NOT NULL,
                payload {blob} NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX cache_messages_channel_id ON cache_messages (channel, id)",
            "CREATE INDEX cache_messages_created_at ON cache_messages (created_at)",
        ),
    ),
    Migration(
        4,
        "resources, resource templates, prompts and virtual servers",
        (
            # Owned records carry the upstream's name and go with it, like tools. JSON is
            # kept as TEXT, as in `tools`, so both dialects read it back the same way.
            """
            CREATE TABLE resources (
                uri TEXT PRIMARY KEY,
                upstream TEXT NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
                name TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                title TEXT,
                mime_type TEXT,
                size BIGINT,
                annotations TEXT,
                enabled BOOLEAN NOT NULL DEFAULT TRUE
            )
            """,
            # Replacing or cascading an upstream's records looks them up by upstream;
            # prompts get that index from their UNIQUE constraint.
            "CREATE INDEX resources_upstream ON resources (upstream)",
            """
            CREATE TABLE resource_templates (
                uri_template TEXT PRIMARY KEY,
                upstream TEXT NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
                name TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                title TEXT,
                mime_type TEXT,
                annotations TEXT,
                enabled BOOLEAN NOT NULL DEFAULT TRUE
            )
            """,
            "CREATE INDEX resource_templates_upstream ON resource_templates (upstream)",
            """
            CREATE TABLE prompts (
                name TEXT PRIMARY KEY,
                upstream TEXT NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
                original_name TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                title TEXT,
                arguments TEXT NOT NULL DEFAULT '[]',
                enabled BOOLEAN NOT NULL DEFAULT TRUE,
                UNIQUE (upstream, original_name)
            )
            """,
            # Members are gateway names and URIs, not foreign keys: a server outlives the
            # upstreams that come and go under it.
            """
            CREATE TABLE servers (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                tools TEXT NOT NULL DEFAULT '[]',
                resources TEXT NOT NULL DEFAULT '[]',
                prompts TEXT NOT NULL DEFAULT '[]',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
    Migration(
        5,
        "whether an upstream's clients share its sessions or each get their own",
        ("ALTER TABLE upstreams ADD COLUMN session TEXT NOT NULL DEFAULT 'shared'",),
    ),
    Migration(
        6,
        "revoked JWTs, kept until the token would have expired",
        (
            """
            CREATE TABLE revoked_tokens (
                jti TEXT PRIMARY KEY,
                subject TEXT NOT NULL DEFAULT '',
                expires_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at)",
        ),
    ),
    Migration(
        7,
        "an upstream's transport-specific options and its discovery notes",
        (
            # '' reads back as an empty mapping (see `gateway.store.rows`).
            "ALTER TABLE upstreams ADD COLUMN options TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE upstreams ADD COLUMN notes TEXT NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        8,
        "tool curation (aliases, titles, descriptions, annotations, tags) and how virtual "
        "servers choose and show tools",
        (
            # Keyed by gateway name, not a foreign key: curation outlives upstream refreshes
            # and an upstream's removal and return.
            """
            CREATE TABLE tool_overrides (
                name TEXT PRIMARY KEY,
                alias TEXT UNIQUE,
                title TEXT,
                description TEXT,
                annotations TEXT,
                tags TEXT NOT NULL DEFAULT '[]',
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "ALTER TABLE servers ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE servers ADD COLUMN tool_mode TEXT NOT NULL DEFAULT 'list'",
        ),
    ),
    Migration(
        9,
        "the interceptors a virtual server's calls run",
        # NULL: the gateway's INTERCEPTORS; a JSON list: exactly those.
        ("ALTER TABLE servers ADD COLUMN interceptors TEXT",),
    ),
    Migration(
        10,
        "what a configuration file manages, and the lease one applier holds",
        (
            """
            CREATE TABLE config_managed (
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                PRIMARY KEY (kind, name)
            )
            """,
            """
            CREATE TABLE config_lease (
                id INTEGER PRIMARY KEY,
                holder TEXT NOT NULL DEFAULT '',
                expires_at DOUBLE PRECISION NOT NULL DEFAULT 0
            )
            """,
            "INSERT INTO config_lease (id, holder, expires_at) VALUES (1, '', 0)",
        ),
    ),
    Migration(
        11,
        "roles made through the admin API, and the tokens the gateway minted",
        (
            """
            CREATE TABLE roles (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE managed_tokens (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                subject TEXT NOT NULL,
                scopes TEXT NOT NULL DEFAULT '[]',
                servers TEXT NOT NULL DEFAULT '[]',
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION
            )
            """,
        ),
    ),
    Migration(
        12,
        "which start of which instance applied which configuration file",
        (
            """
            CREATE TABLE config_applied (
                marker TEXT PRIMARY KEY,
                applied_at DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
    Migration(
        13,
        "the icons and _meta an upstream lists with its tools, resources, templates and prompts",
        (
            # JSON text, as the other definition columns: a list of `Icon` objects, and
            # NULL for no `_meta`.
            "ALTER TABLE tools ADD COLUMN icons TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE tools ADD COLUMN meta TEXT",
            "ALTER TABLE resources ADD COLUMN icons TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE resources ADD COLUMN meta TEXT",
            "ALTER TABLE resource_templates ADD COLUMN icons TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE resource_templates ADD COLUMN meta TEXT",
            "ALTER TABLE prompts ADD COLUMN icons TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE prompts ADD COLUMN meta TEXT",
        ),
    ),
    Migration(
        14,
        "the fields an upstream lists with its tools, resources, templates and prompts that "
        "the gateway does not model",
        (
            # JSON text, as `meta`: one object of the entry's other top-level fields, and
            # NULL for none.
            "ALTER TABLE tools ADD COLUMN extra TEXT",
            "ALTER TABLE resources ADD COLUMN extra TEXT",
            "ALTER TABLE resource_templates ADD COLUMN extra TEXT",
            "ALTER TABLE prompts ADD COLUMN extra TEXT",
        ),
    ),
)


async def migrate(conn: Connection, dialect: str) -> list[int]:
    """Apply pending migrations inside the caller's write transaction; return their versions."""
    if dialect == "postgresql":
        # Taken before touching any table: concurrent CREATE TABLE IF NOT EXISTS can still
        # fail on PostgreSQL, so even the bookkeeping table must be created under the lock.
        await conn.fetchone("SELECT pg_advisory_xact_lock(?)", (ADVISORY_LOCK_KEY,))
    await conn.execute(CREATE_SCHEMA_MIGRATIONS)
    applied = {int(row[0]) for row in await conn.fetchall("SELECT version FROM schema_migrations")}
    done: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.sql(dialect):
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.description, time.time()),
        )
        done.append(migration.version)
    return done
