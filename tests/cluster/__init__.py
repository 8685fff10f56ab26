"""Multi-process tests: several gunicorn gateways sharing a store and a cache."""
