"""The parts of the `oauth` authenticator (`gateway_plugins.auth_oauth`): the issuer's
signing keys (`jwks`), checking an access token (`tokens`) and the protected-resource
metadata with the challenges that point clients to it (`resource`)."""
