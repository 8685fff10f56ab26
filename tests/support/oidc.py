"""A real authorization server for tests: the npm `oidc-provider` package (a certified
OpenID Connect implementation) run by `tests/support/oidc/server.mjs`.

It issues JWT access tokens (RFC 9068) for any resource indicator, whose `aud` it becomes,
through client credentials, authorization code + PKCE (its login and consent approve
themselves) and token exchange (RFC 8693: an access token it signed, exchanged for one with
the same `sub` for the requested resource, naming the exchanging client in `act`; refused
for the subjects in `refused_subjects`), and registers clients dynamically. One client per
signing algorithm: `CLIENTS["RS256"]`, `CLIENTS["ES256"]`, `CLIENTS["EdDSA"]`. The tests
hold the private signing keys too (`AuthorizationServer.sign`), to make the tokens a real
server would never issue: expired, not yet valid, for another audience...

Use the fixtures from a conftest (`from tests.support.oidc import oidc_provider_modules,
authorization_server`), then::

    server = authorization_server            # started, stopped after the test
    token = await server.client_credentials(resource=gateway_url, scopes=["mcp"])
    server.issuer                            # OAUTH_ISSUER for the gateway
"""

from __future__ import annotations

import base64
import os
import secrets
import select
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.conftest import free_port
from tests.support.npm import npm_install
from tests.upstreams.processes import end_process

OIDC_PROVIDER = "oidc-provider@9"
SCRIPT = Path(__file__).parent / "oidc" / "server.mjs"
SCOPES = ("mcp", "admin", "metrics", "other")
START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_secret: str
    alg: str


CLIENTS = {
    alg: Client(f"{alg.lower()}-client", f"{alg.lower()}-secret-{secrets.token_hex(8)}", alg)
    for alg in ("RS256", "ES256", "EdDSA")
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def new(cls, alg: str) -> SigningKey:
        kid = f"{alg.lower()}-{secrets.token_hex(4)}"
        if alg == "RS256":
            return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg == "ES256":
            return cls(kid, alg, ec.generate_private_key(ec.SECP256R1()))
        return cls(kid, alg, ed25519.Ed25519PrivateKey.generate())

    def private_jwk(self) -> dict[str, Any]:
        encoder = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        jwk: dict[str, Any] = orjson.loads(encoder.to_jwk(self.private))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_jwk(self) -> dict[str, Any]:
        private = {"d", "p", "q", "dp", "dq", "qi"}
        return {k: v for k, v in self.private_jwk().items() if k not in private}

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@dataclass
class AuthorizationServer:
    """One oidc-provider process on loopback."""

    modules: Path
    workdir: Path
    access_token_ttl: int = 600
    refused_subjects: tuple[str, ...] = ()
    """Subjects whose tokens the token exchange refuses (`invalid_grant`)."""
    port: int = field(default_factory=free_port)
    keys: dict[str, SigningKey] = field(
        default_factory=lambda: {alg: SigningKey.new(alg) for alg in ("RS256", "ES256", "EdDSA")}
    )
    process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def start(self) -> None:
        config = {
            "port": self.port,
            "clients": [
                {"client_id": c.client_id, "client_secret": c.client_secret, "alg": c.alg}
                for c in CLIENTS.values()
            ],
            "scopes": list(SCOPES),
            "keys": [key.private_jwk() for key in self.keys.values()],
            "access_token_ttl": self.access_token_ttl,
            "refused_subjects": list(self.refused_subjects),
        }
        config_path = self.workdir / f"oidc-{self.port}.json"
        config_path.write_bytes(orjson.dumps(config))
        log = (self.workdir / f"oidc-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), str(config_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "NODE_PATH": str(self.modules)},
        )
        log.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith(b"ready "):
                    return
                if not line:
                    break
        self.stop()
        raise RuntimeError(f"oidc-provider did not start; see {self.workdir}")

    def stop(self) -> None:
        if self.process is None:
            return
        end_process(self.process, 10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    async def client_credentials(
        self, resource: str, scopes: Sequence[str] = (), alg: str = "RS256"
    ) -> str:
        """An access token for `resource` from the client whose tokens are signed with `alg`."""
        client = CLIENTS[alg]
        credentials = base64.b64encode(
            f"{client.client_id}:{client.client_secret}".encode()
        ).decode()
        form = {"grant_type": "client_credentials", "resource": resource}
        if scopes:
            form["scope"] = " ".join(scopes)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.issuer}/token",
                data=form,
                headers={"Authorization": f"Basic {credentials}"},
            ) as response,
        ):
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"token request refused: {body}")
            return str(body["access_token"])

    def sign(self, claims: dict[str, Any], alg: str = "RS256", **header: Any) -> str:
        """A token signed with the issuer's own key for `alg` (its kid in the header)."""
        key = self.keys[alg]
        return jwt.encode(
            claims, key.private, algorithm=alg, headers={"kid": key.kid, "typ": "at+jwt", **header}
        )

    def verified(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of `token` if this server signed it (RS256) for `audience`, as an
        upstream checks the tokens it gets; `jwt.PyJWTError` otherwise."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self.keys["RS256"].public_pem(),
            algorithms=["RS256"],
            audience=audience,
            issuer=self.issuer,
        )
        return claims

    def claims(
        self, audience: str, scopes: Sequence[str] = ("mcp",), **extra: Any
    ) -> dict[str, Any]:
        """What this server puts in an access token, valid for ten minutes from now."""
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": "crafted",
            "aud": audience,
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(12),
            "scope": " ".join(scopes),
            "client_id": CLIENTS["RS256"].client_id,
            **extra,
        }


@pytest.fixture(scope="session")
def oidc_provider_modules(request: pytest.FixtureRequest) -> Path:
    """oidc-provider, installed once into the pytest cache; the `node_modules` folder."""
    provides = ["node_modules/oidc-provider/package.json"]
    folder = npm_install(request.config, "oidc-provider", [OIDC_PROVIDER], provides)
    return folder / "node_modules"


@pytest.fixture
def authorization_server(
    oidc_provider_modules: Path, tmp_path: Path
) -> Iterator[AuthorizationServer]:
    """A started oidc-provider, stopped after the test."""
    server = AuthorizationServer(oidc_provider_modules, tmp_path)
    server.start()
    yield server
    server.stop()
