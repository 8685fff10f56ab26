"""Tests of the cache implementations and their shared conformance suite."""
