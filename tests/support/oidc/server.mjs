// A real OAuth 2.1 / OpenID Connect authorization server for the tests: the npm
// `oidc-provider` package, configured to issue JWT access tokens for any resource indicator
// (its audience), through client credentials, authorization code + PKCE and token exchange
// (RFC 8693: a subject access token this server signed, exchanged for one with the same
// `sub` for the requested resource, naming the exchanging client in `act`).
//
// Usage: node server.mjs <config.json>, with NODE_PATH naming the folder that holds
// oidc-provider. The config names the port, the clients (each with the algorithm its access
// tokens are signed with), the scopes resource servers offer and, optionally, the private
// signing keys as JWKs (generated here otherwise) and the subjects whose tokens it refuses
// to exchange (`refused_subjects`). Interactions approve
// themselves: the login is the account in `config.account`, consent grants what was asked.
// Prints "ready <issuer>" once listening.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.NODE_PATH}/`);
const { default: Provider, errors } = await import(require.resolve('oidc-provider'));
const jose = await import(require.resolve('jose'));

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

function signingKey(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const suffix = Math.random().toString(36).slice(2, 10);
const keys = config.keys ?? [
  signingKey('rsa', { modulusLength: 2048 }, `rsa-${suffix}`, 'RS256'),
  signingKey('ec', { namedCurve: 'P-256' }, `ec-${suffix}`, 'ES256'),
  signingKey('ed25519', {}, `ed-${suffix}`, 'EdDSA'),
];

const algOfClient = Object.fromEntries(config.clients.map((c) => [c.client_id, c.alg ?? 'RS256']));
const resourceScope = config.scopes.join(' ');
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const refusedSubjects = new Set(config.refused_subjects ?? []);
const notPublic = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'key_ops']);
const ownKeys = jose.createLocalJWKSet({
  keys: keys.map((key) => Object.fromEntries(Object.entries(key).filter(([k]) => !notPublic.has(k)))),
});

function resourceServerInfo(resourceIndicator, client) {
  return {
    scope: resourceScope,
    audience: resourceIndicator,
    accessTokenTTL: config.access_token_ttl ?? 600,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: algOfClient[client.clientId] ?? 'RS256' } },
  };
}

const provider = new Provider(issuer, {
  clients: config.clients.map(({ alg, ...client }) => ({
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token', TOKEN_EXCHANGE],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: { keys },
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  scopes: ['openid', 'offline_access', ...config.scopes],
  pkce: { required: () => true },
  ttl: {
    AccessToken: config.access_token_ttl ?? 600,
    ClientCredentials: config.access_token_ttl ?? 600,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    AuthorizationCode: 60,
    RefreshToken: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator, client) => resourceServerInfo(resourceIndicator, client),
    },
  },
  extraTokenClaims: (ctx) => (ctx?.exchangeActor ? { act: ctx.exchangeActor } : undefined),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

// RFC 8693 token exchange: the subject token must be an access token this server signed
// (and that has not expired); the issued token keeps its `sub`, is for the requested
// resource (or audience), and names the client that exchanged it in `act`.
async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest('subject_token_type must be an access token');
  }
  let subject;
  try {
    ({ payload: subject } = await jose.jwtVerify(params.subject_token, ownKeys, { issuer }));
  } catch (err) {
    console.error(`token exchange: subject token refused: ${err}`);
    throw new errors.InvalidGrant('subject_token is not a valid access token of this issuer');
  }
  if (typeof subject.sub !== 'string' || refusedSubjects.has(subject.sub)) {
    throw new errors.InvalidGrant('this subject may not be delegated');
  }
  const target = params.resource ?? params.audience;
  if (!target || !URL.parse(target)) {
    throw new errors.InvalidTarget('resource or audience must be an absolute URI');
  }
  const resourceServer = new provider.ResourceServer(target, resourceServerInfo(target, client));
  const offered = new Set(resourceScope.split(' '));
  const scope = (params.scope ?? '').split(' ').filter((s) => offered.has(s)).join(' ');
  const token = new provider.AccessToken({
    accountId: subject.sub,
    client,
    gty: 'token_exchange',
    scope: scope || undefined,
  });
  token.resourceServer = resourceServer;
  ctx.exchangeActor = { sub: client.clientId };
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}
provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
  'subject_token',
  'subject_token_type',
  'requested_token_type',
  'audience',
  'resource',
  'scope',
]);

async function approve(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: config.account ?? 'user-1' } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    approve(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
    return;
  }
  callback(req, res);
});
server.listen(config.port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
