// A real OpenID Provider for the broker's OIDC interop tests: oidc-provider (OpenID
// Certified), configured from the environment, with an automatic login/consent interaction
// so HTTP clients can follow plain redirects (no HTML forms).
//
//   node op.js --port 0          (or OP_PORT; 0 = any free port, printed in the ready line)
//
// Environment (all optional except the client secrets):
//   OP_CLIENT_ID / OP_CLIENT_SECRET              client using client_secret_post
//   OP_BASIC_CLIENT_ID / OP_BASIC_CLIENT_SECRET  client using client_secret_basic
//   OP_REDIRECT_URIS                             space-separated, registered for both clients
//   OP_POST_LOGOUT_REDIRECT_URIS                 space-separated, for both clients
//   OP_BACKCHANNEL_LOGOUT_URI / OP_BASIC_BACKCHANNEL_LOGOUT_URI   per client (optional)
//   OP_JWKS                                      JSON {"keys": [private RSA JWK, ...]}; generated if unset
//   OP_ACCOUNTS                                  JSON {"accountId": {claims...}}; default: alice
//   OP_ADMIN_TOKEN                               bearer token for the /__admin/ endpoints
//
// Admin endpoints (Authorization: Bearer $OP_ADMIN_TOKEN):
//   POST /__admin/reconfigure  JSON with any of {jwks, redirect_uris, post_logout_redirect_uris,
//                              backchannel_logout_uri, basic_backchannel_logout_uri}: builds a new
//                              Provider instance in place (oidc-provider's keys and clients are
//                              static per instance). Sessions, grants and codes live in the
//                              module-level memory adapter and survive, as they would at a real
//                              provider rotating its keys.
//   GET  /__admin/state        the public kids, request counts per path, and events (back-channel
//                              logout deliveries with the logout token sent and the RP's status).
//
// Test-only departure from the defaults: oidc-provider refuses outgoing requests to special-use
// addresses (SSRF protection), and the relying party under test listens on loopback, so the
// `fetch` hook below drops that dispatcher. Never do this in a real deployment.

import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: { port: { type: 'string' }, host: { type: 'string' } },
});
const HOST = args.host || process.env.OP_HOST || '127.0.0.1';
const PORT = Number(args.port ?? process.env.OP_PORT ?? 0);

const words = (value) => (value || '').split(/[\s,]+/).filter(Boolean);

function required(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`op.js: ${name} must be set\n`);
    process.exit(2);
  }
  return value;
}

function generateJwks() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = createHash('sha256').update(jwk.n).digest('base64url').slice(0, 16);
  return { keys: [{ ...jwk, kid, use: 'sig', alg: 'RS256' }] };
}

const settings = {
  jwks: process.env.OP_JWKS ? JSON.parse(process.env.OP_JWKS) : generateJwks(),
  redirect_uris: words(process.env.OP_REDIRECT_URIS),
  post_logout_redirect_uris: words(process.env.OP_POST_LOGOUT_REDIRECT_URIS),
  backchannel_logout_uri: process.env.OP_BACKCHANNEL_LOGOUT_URI || '',
  basic_backchannel_logout_uri: process.env.OP_BASIC_BACKCHANNEL_LOGOUT_URI || '',
};
const clients = {
  post: { id: required('OP_CLIENT_ID'), secret: required('OP_CLIENT_SECRET') },
  basic: {
    id: process.env.OP_BASIC_CLIENT_ID || '',
    secret: process.env.OP_BASIC_CLIENT_SECRET || '',
  },
};
const accounts = process.env.OP_ACCOUNTS ? JSON.parse(process.env.OP_ACCOUNTS) : {
  alice: {
    name: 'Alice Example',
    preferred_username: 'alice',
    email: 'alice@example.org',
    email_verified: true,
    groups: ['api_admins'],
  },
};
const DEFAULT_ACCOUNT = Object.keys(accounts)[0];
const ADMIN_TOKEN = process.env.OP_ADMIN_TOKEN || '';
// Cookie signing keys stay the same across rebuilds, so browser sessions survive them.
const COOKIE_KEYS = [randomBytes(32).toString('base64url')];

const stats = {};
const events = [];

function log(message) {
  process.stderr.write(`${new Date().toISOString()} op.js ${message}\n`);
}

function clientMetadata() {
  const metadata = [];
  const add = (client, method, backchannel) => {
    if (!client.id) return;
    metadata.push({
      client_id: client.id,
      client_secret: client.secret,
      token_endpoint_auth_method: method,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: settings.redirect_uris,
      post_logout_redirect_uris: settings.post_logout_redirect_uris,
      id_token_signed_response_alg: 'RS256',
      ...(backchannel ? { backchannel_logout_uri: backchannel, backchannel_logout_session_required: true }
        : {}),
    });
  };
  add(clients.post, 'client_secret_post', settings.backchannel_logout_uri);
  add(clients.basic, 'client_secret_basic', settings.basic_backchannel_logout_uri);
  return metadata;
}

const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title>
</head><body><h1>${title}</h1>${body}</body></html>`;

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: clientMetadata(),
    jwks: settings.jwks,
    cookies: { keys: COOKIE_KEYS },
    pkce: { required: () => true }, // oidc-provider only implements S256
    scopes: ['openid', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...account }; } };
    },
    features: {
      devInteractions: { enabled: false }, // replaced by autoInteraction() below
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out?', `${form}<button type="submit" form="op.logoutForm" name="logout"
            value="yes">Yes, sign me out</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<p>You are signed out at the provider.</p>');
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('OP error', `<pre>${JSON.stringify(out).replace(/</g, '&lt;')}</pre>`);
    },
    async fetch(url, options) {
      // Test-only: the RP is on loopback, which the default SSRF-protected dispatcher refuses.
      const { dispatcher, ...rest } = options; // eslint-disable-line no-unused-vars
      const token = rest.body instanceof URLSearchParams ? rest.body.get('logout_token') : null;
      const response = await globalThis.fetch(url, rest);
      if (token) {
        events.push({ type: 'backchannel.sent', url: String(url), logout_token: token,
          status: response.status });
      }
      return response;
    },
  });
  for (const name of ['backchannel.error', 'server_error', 'grant.error', 'authorization.error',
    'end_session.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
    provider.on(name, (ctx, err, client) => {
      const cause = err?.cause ? ` (cause: ${err.cause.name}: ${err.cause.message})` : '';
      const text = `${err?.name}: ${err?.message} ${err?.error_description || ''}${cause}`;
      events.push({ type: name, error: text, client: client?.clientId });
      log(`${name}: ${text}`);
    });
  }
  provider.on('backchannel.success', (ctx, client, accountId, sid) => {
    events.push({ type: 'backchannel.success', client: client.clientId, sub: accountId, sid });
  });
  return { provider, handle: provider.callback() };
}

let current;
let issuer;

// The login and consent prompts, answered at once: the account is the login_hint if it is
// known, else the first account; consent grants exactly what was asked.
async function autoInteraction(req, res) {
  const { provider } = current;
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    const hint = params.login_hint;
    const accountId = hint && accounts[hint] ? hint : DEFAULT_ACCOUNT;
    result = { login: { accountId, amr: ['pwd'] } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  const location = await provider.interactionResult(req, res, result, { mergeWithLastSubmission: true });
  res.writeHead(303, { Location: location, 'Cache-Control': 'no-store' });
  res.end();
}

function authorized(req) {
  const given = Buffer.from(req.headers.authorization || '');
  const expected = Buffer.from(`Bearer ${ADMIN_TOKEN}`);
  return ADMIN_TOKEN !== '' && given.length === expected.length && timingSafeEqual(given, expected);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function json(res, status, value) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(JSON.stringify(value));
}

const publicKids = () => settings.jwks.keys.map((k) => k.kid);

async function admin(req, res, path) {
  if (!authorized(req)) return json(res, 401, { error: 'unauthorized' });
  if (path === '/__admin/state' && req.method === 'GET') {
    return json(res, 200, { issuer, kids: publicKids(), requests: stats, events });
  }
  if (path === '/__admin/reconfigure' && req.method === 'POST') {
    const body = await readJson(req);
    for (const key of Object.keys(settings)) {
      if (key in body) settings[key] = body[key];
    }
    if (body.jwks === 'generate') settings.jwks = generateJwks();
    current = build(issuer);
    log(`reconfigured: kids=${publicKids().join(',')}`);
    return json(res, 200, { kids: publicKids(), clients: clientMetadata().map((c) => c.client_id) });
  }
  return json(res, 404, { error: 'not_found' });
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://op.invalid').pathname;
  stats[path] = (stats[path] || 0) + 1;
  let work;
  if (path.startsWith('/__admin/')) {
    work = admin(req, res, path);
  } else if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(path)) {
    work = autoInteraction(req, res);
  } else {
    return current.handle(req, res);
  }
  work.catch((err) => {
    log(`${path}: ${err.stack || err}`);
    if (!res.headersSent) json(res, 500, { error: 'server_error', error_description: String(err.message) });
    else res.end();
  });
  return undefined;
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  current = build(issuer);
  process.stdout.write(`${JSON.stringify({ url: issuer, port, kids: publicKids() })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
}
