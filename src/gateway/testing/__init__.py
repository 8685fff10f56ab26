"""Test helpers the gateway ships for plugin authors; `cache_conformance` is a pytest plugin."""
