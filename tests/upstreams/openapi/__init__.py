"""REST services with OpenAPI documents, for the OpenAPI backend's tests."""
