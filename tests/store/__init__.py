"""Tests of the SQL store: records, features, row mapping and migrations."""
