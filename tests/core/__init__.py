"""Tests of the core: settings, plugins and hooks, auth, access, limits, start-up and shutdown."""
