"""Declarative configuration: a YAML file (`GATEWAY_CONFIG`) of upstreams, virtual servers
and tool settings, applied at start as desired state; `config export` and `config apply`."""
