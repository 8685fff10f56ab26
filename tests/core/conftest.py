"""What the core tests share: one in-process gateway (`client`) with the `faulty` fixture
backend, called without credentials unless a test sends its own."""

from __future__ import annotations

import pytest

from tests.conftest import Client, GatewayFactory
from tests.plugins import faulty


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway(plugins=[faulty])
