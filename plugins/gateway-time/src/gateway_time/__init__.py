"""gateway-time: time tools for aio-mcp-gateway, and a worked example of a plugin package.

The gateway loads this module through the `aio_mcp_gateway` entry point declared in
`pyproject.toml` and calls the hooks marked `@hookimpl` below. This one registers a local
backend: the gateway then adds one upstream for it, with no prefix, so its tools appear as
`get_system_time` and `convert_time`. Everything a plugin needs comes from `gateway.plugin`.
"""

from __future__ import annotations

from gateway.plugin import BackendSpec, Registrar, hookimpl

from gateway_time.backend import TimeBackend, create_time_backend

__all__ = ["TimeBackend", "gateway_register_backends"]


@hookimpl
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="time",
            transport="time",
            factory=create_time_backend,
            description="Current time in any IANA timezone and conversions between zones.",
            local=True,
        )
    )
