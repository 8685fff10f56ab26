"""Helpers shared by the configuration-file tests."""

from __future__ import annotations

from gateway.config.apply import Applier
from gateway.keys import REGISTRY, STORE, UPSTREAMS
from tests.conftest import Client


def applier_of(client: Client) -> Applier:
    """The applier of the in-process gateway behind `client`, as `config apply` builds it."""
    return Applier(client.app[STORE], client.app[UPSTREAMS], client.app[REGISTRY])
