"""Fixture plugins that tests register directly with the plugin manager."""
