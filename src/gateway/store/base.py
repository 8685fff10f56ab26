"""The `Store` protocol on SQL, assembled from its parts; a dialect (`sqlite.py`,
`postgres.py`) adds only its connections and its driver's errors."""

from __future__ import annotations

from gateway.store.changes import SettingChanges
from gateway.store.curation import CurationWrites
from gateway.store.reads import CatalogueReads
from gateway.store.servers import ServerWrites
from gateway.store.upstream_writes import UpstreamWrites


class SQLStore(UpstreamWrites, ServerWrites, SettingChanges, CurationWrites, CatalogueReads):
    """Everything but the dialect: see `connections.SQLBase` for what a dialect provides."""
