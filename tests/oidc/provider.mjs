// A real OpenID provider for the sign-in tests: node's `oidc-provider` (a certified
// implementation, installed from npm by tests/run into target/oidc-provider), configured
// from a JSON file the test writes:
//
//   {"port": 41234, "issuer": "http://127.0.0.1:41234",
//    "clients": [{"client_id": "xaas", "client_secret": "…", "redirect_uris": ["…"],
//                 "post_logout_redirect_uris": ["…"]},
//                {"client_id": "xaas-jwt", "key_pem": "-----BEGIN PRIVATE KEY-----…", …}],
//    "accounts": {"vera": {"email": "vera@example.com", "name": "Vera Viewer", "groups": ["ops"]}},
//    "id_token_ttl": 3600,
//    "clock_offset_secs": 0,
//    "faults": {"mallory": "tamper_id_token"}}
//
// The login page is ours (a one-field form: the account to sign in as; any name is an
// account, and one not in `accounts` has no groups), so a browser or a plain HTTP client
// can drive it. `faults` alters the token response for one account (or one client id), to
// test that xaas refuses what it must: `tamper_id_token` rewrites the ID token's payload
// (email and groups) and keeps the signature, which no longer matches.
// `clock_offset_secs` runs the provider's clock that far from the real one (its tokens are
// issued in the past or the future), for the expired-token and clock-skew tests.
//
// Prints "oidc provider listening on <issuer>" once it accepts connections.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import crypto from 'node:crypto';

// ES modules ignore NODE_PATH: the test says where tests/run installed the package.
const modules = process.env.XAAS_OIDC_MODULES;
const { default: Provider } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts || {};
const faults = config.faults || {};
if (config.clock_offset_secs) {
  const realNow = Date.now;
  Date.now = () => realNow() + config.clock_offset_secs * 1000;
}

const provider = new Provider(config.issuer, {
  // A client with `key_pem` authenticates with private_key_jwt: the public half of that PEM
  // key is registered as its JWKS.
  clients: config.clients.map(({ key_pem, ...c }) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...(key_pem && {
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [{ ...crypto.createPublicKey(key_pem).export({ format: 'jwk' }), use: 'sig' }] },
    }),
    ...c,
  })),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // The groups go in the ID token (xaas reads them there, as from Okta's groups claim).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: {
    IdToken: config.id_token_ttl || 3600,
    AccessToken: 600,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  cookies: { keys: ['xaas-test-provider-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const known = accounts[sub] || {};
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: known.email || `${sub}@example.com`,
          email_verified: known.email_verified !== false,
          name: known.name || sub,
          groups: known.groups || [],
        };
      },
    };
  },
});
provider.proxy = true;

// Faults on the token endpoint's answer, by account (the token's subject) or by client.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== '/token' || !ctx.body || !ctx.body.id_token) return;
  const [h, p, s] = ctx.body.id_token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  const fault = faults[claims.sub] || (ctx.oidc && ctx.oidc.client && faults[ctx.oidc.client.clientId]);
  if (fault === 'tamper_id_token') {
    claims.email = 'abe@example.com';
    claims.groups = ['xaas-approvers'];
    ctx.body = { ...ctx.body, id_token: [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.') };
  }
});

const escape = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

async function body(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return new URLSearchParams(text);
}

async function interaction(req, res) {
  const match = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
  try {
    const details = await provider.interactionDetails(req, res);
    if (!match[2]) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><title>Test IdP</title><h1>Sign in to the test IdP</h1>
        <p>client ${escape(details.params.client_id)}</p>
        <form method="post" action="/interaction/${escape(details.uid)}/login">
        <input name="login" id="idp-login" autofocus><button id="idp-submit">Sign in</button></form>`);
      return;
    }
    const form = await body(req);
    const accountId = (form.get('login') || '').trim() || 'nobody';
    const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  } catch (e) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${e.message}`);
  }
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res);
  } else {
    callback(req, res);
  }
});
server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc provider listening on ${config.issuer}`);
});
