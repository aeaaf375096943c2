#!/usr/bin/env node
// A SAML 2.0 IdP built on samlify (an independent implementation from the npm registry),
// for interop tests of the broker's SP. It knows one user and logs them in at once.
//
//   node saml_idp.js --key idp-key.pem --cert idp-cert.pem --sp-dir DIR \
//        [--sign assertion|both|response] [--public-host localhost] [--port 0]
//
// Trusted SPs are the metadata files DIR/<name>.xml, read at each request (so tests may
// add them after this process started); DIR/<name>.sign, when present, holds that SP's
// signing mode, else --sign applies:
//   assertion  the Assertion is signed, inside an unsigned Response
//   both       the Assertion is signed, and the Response around it
//   response   only the Response is signed
// Signatures are RSA-SHA256 with SHA-256 digests.
//
// GET /metadata  the IdP's metadata (WantAuthnRequestsSigned="true", HTTP-Redirect SSO)
// GET /sso       an HTTP-Redirect AuthnRequest from a trusted SP; its signature is verified
//                against that SP's metadata. The answer is an auto-submitting HTML form
//                POSTing SAMLResponse + RelayState to the SP's ACS.
// GET /healthz   "ok"
//
// Listens on 127.0.0.1 and advertises http://<public-host>:<port>; once ready (the schema
// validator is warmed up: its first use takes seconds) it prints a line
// READY {"port": N, "url": "..."} on stdout. Refusals are answered 400 with the reason and
// logged on stderr.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const crypto = require('node:crypto');
const samlify = require('samlify');
const validator = require('@authenio/samlify-node-xmllint');

const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
const PERSISTENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
const BASIC = 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic';
const PASSWORD_PROTECTED = 'urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport';
const REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const SIGN_MODES = ['assertion', 'both', 'response'];

const USER = {
  nameId: 'interop-user',
  attributes: {
    mail: ['interop-user@idp.example'],
    givenName: ['Interop'],
    groups: ['api_admins', 'interop-testers'],
  },
};

function parseArgs(argv) {
  const args = { sign: 'assertion', port: '0', 'public-host': '127.0.0.1' };
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i].replace(/^--/, '');
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    args[name] = argv[i + 1];
    i += 1;
  }
  for (const required of ['key', 'cert', 'sp-dir']) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  if (!SIGN_MODES.includes(args.sign)) {
    throw new Error(`--sign must be assertion, both or response, not ${args.sign}`);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
samlify.setSchemaValidator(validator);

function xmlEscape(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;',
  }[c]));
}

const htmlEscape = xmlEscape;

// The Response as real IdPs send it: NameID, bearer confirmation, audience, an
// AuthnStatement and multi-valued attributes. Values are escaped here; the signing
// (per --sign) is samlify's.
function responseXml(tags) {
  const attributes = Object.entries(USER.attributes).map(([name, values]) => (
    `<saml:Attribute Name="${xmlEscape(name)}" NameFormat="${BASIC}">${
      values.map((v) => `<saml:AttributeValue xsi:type="xs:string">${xmlEscape(v)}</saml:AttributeValue>`)
        .join('')}</saml:Attribute>`)).join('');
  const t = Object.fromEntries(Object.entries(tags).map(([k, v]) => [k, xmlEscape(v)]));
  return '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
    + 'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
    + `ID="${t.ID}" Version="2.0" IssueInstant="${t.Now}" Destination="${t.Destination}" `
    + `InResponseTo="${t.InResponseTo}">`
    + `<saml:Issuer>${t.Issuer}</saml:Issuer>`
    + '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
    + '<saml:Assertion xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    + 'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    + `ID="${t.AssertionID}" Version="2.0" IssueInstant="${t.Now}">`
    + `<saml:Issuer>${t.Issuer}</saml:Issuer>`
    + '<saml:Subject>'
    + `<saml:NameID Format="${PERSISTENT}" NameQualifier="${t.Issuer}" SPNameQualifier="${t.Audience}">`
    + `${t.NameID}</saml:NameID>`
    + '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
    + `<saml:SubjectConfirmationData NotOnOrAfter="${t.Later}" Recipient="${t.Destination}" `
    + `InResponseTo="${t.InResponseTo}"/>`
    + '</saml:SubjectConfirmation></saml:Subject>'
    + `<saml:Conditions NotBefore="${t.Now}" NotOnOrAfter="${t.Later}">`
    + `<saml:AudienceRestriction><saml:Audience>${t.Audience}</saml:Audience></saml:AudienceRestriction>`
    + '</saml:Conditions>'
    + `<saml:AuthnStatement AuthnInstant="${t.Now}" SessionIndex="${t.SessionIndex}">`
    + `<saml:AuthnContext><saml:AuthnContextClassRef>${PASSWORD_PROTECTED}</saml:AuthnContextClassRef>`
    + '</saml:AuthnContext></saml:AuthnStatement>'
    + `<saml:AttributeStatement>${attributes}</saml:AttributeStatement>`
    + '</saml:Assertion></samlp:Response>';
}

// The trusted SP whose entity ID is ``entityId``, with its signing mode.
function findServiceProvider(entityId) {
  const dir = args['sp-dir'];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.xml')).sort()) {
    const metadata = fs.readFileSync(path.join(dir, file), 'utf8');
    const signFile = path.join(dir, file.replace(/\.xml$/, '.sign'));
    const sign = fs.existsSync(signFile) ? fs.readFileSync(signFile, 'utf8').trim() : args.sign;
    if (!SIGN_MODES.includes(sign)) throw new Error(`${signFile}: unknown signing mode ${sign}`);
    const sp = samlify.ServiceProvider({
      metadata,
      // samlify signs the assertion when the SP metadata says WantAssertionsSigned, and
      // the message when asked to or when it signs no assertion.
      wantMessageSigned: sign !== 'assertion',
    });
    if (sp.entityMeta.getEntityID() === entityId) {
      // This IdP's signing policy for the SP overrides what the SP metadata asks for.
      sp.entityMeta.isWantAssertionsSigned = () => sign !== 'response';
      return { sp, sign };
    }
  }
  return null;
}

// The signed octets of an HTTP-Redirect message, exactly as they appeared on the wire.
function redirectOctets(rawQuery) {
  const parts = Object.fromEntries(rawQuery.split('&').map((p) => {
    const i = p.indexOf('=');
    return i < 0 ? [p, ''] : [p.slice(0, i), p.slice(i + 1)];
  }));
  return ['SAMLRequest', 'RelayState', 'SigAlg']
    .filter((k) => parts[k] !== undefined)
    .map((k) => `${k}=${parts[k]}`)
    .join('&');
}

let idp;
let baseUrl;

function buildIdp() {
  idp = samlify.IdentityProvider({
    entityID: `${baseUrl}/metadata`,
    signingCert: fs.readFileSync(args.cert, 'utf8'),
    privateKey: fs.readFileSync(args.key, 'utf8'),
    wantAuthnRequestsSigned: true,
    requestSignatureAlgorithm: RSA_SHA256,
    nameIDFormat: [PERSISTENT],
    singleSignOnService: [{ Binding: REDIRECT, Location: `${baseUrl}/sso` }],
  });
}

function refuse(res, message) {
  console.error(`saml_idp: AuthnRequest refused: ${message}`);
  send(res, 400, 'text/plain', `AuthnRequest refused: ${message}\n`);
}

async function handleSso(req, res, url) {
  const rawQuery = req.url.slice(req.url.indexOf('?') + 1);
  const query = Object.fromEntries(url.searchParams);
  if (!query.SAMLRequest) {
    refuse(res, 'no SAMLRequest');
    return;
  }
  // Which SP is asking? (Its signature is checked below, with that SP's metadata.)
  const unverified = samlify.Extractor.extract(
    samlify.Utility.inflateString(query.SAMLRequest),
    [{ key: 'issuer', localPath: ['AuthnRequest', 'Issuer'], attributes: [] }],
  );
  const trusted = findServiceProvider(unverified.issuer);
  if (trusted === null) {
    refuse(res, `unknown SP ${unverified.issuer}`);
    return;
  }
  const { sp, sign } = trusted;
  let parsed;
  try {
    parsed = await idp.parseLoginRequest(sp, 'redirect', { query, octetString: redirectOctets(rawQuery) });
  } catch (err) {
    refuse(res, err instanceof Error ? err.message : String(err));
    return;
  }
  const request = parsed.extract.request || {};
  const acs = sp.entityMeta.getAssertionConsumerService('post');
  const acsUrl = Array.isArray(acs) ? acs[0] : acs;
  if (request.assertionConsumerServiceUrl && request.assertionConsumerServiceUrl !== acsUrl) {
    refuse(res, 'AssertionConsumerServiceURL is not in the SP metadata');
    return;
  }
  if (parsed.extract.issuer !== sp.entityMeta.getEntityID()) {
    refuse(res, `Issuer changed to ${parsed.extract.issuer}`);
    return;
  }
  const now = new Date();
  const later = new Date(now.getTime() + 5 * 60 * 1000);
  const tags = {
    ID: `_${crypto.randomUUID()}`,
    AssertionID: `_${crypto.randomUUID()}`,
    SessionIndex: `_${crypto.randomUUID()}`,
    Now: now.toISOString(),
    Later: later.toISOString(),
    Destination: acsUrl,
    InResponseTo: request.id,
    Issuer: idp.entityMeta.getEntityID(),
    Audience: sp.entityMeta.getEntityID(),
    NameID: USER.nameId,
  };
  const { context } = await idp.createLoginResponse(
    sp, parsed, 'post', {}, {
      relayState: query.RelayState,
      customTagReplacement: () => ({ id: tags.ID, context: responseXml(tags) }),
    },
  );
  console.error(`saml_idp: answering ${request.id} with ${tags.ID} (sign=${sign})`);
  const relay = query.RelayState === undefined ? ''
    : `<input type="hidden" name="RelayState" value="${htmlEscape(query.RelayState)}">`;
  send(res, 200, 'text/html; charset=utf-8', `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>samlify IdP</title></head>
<body onload="document.forms[0].submit()">
<form method="post" action="${htmlEscape(acsUrl)}">
<input type="hidden" name="SAMLResponse" value="${htmlEscape(context)}">
${relay}
<noscript><button type="submit">Continue</button></noscript>
</form></body></html>
`);
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, baseUrl);
  const route = `${req.method} ${url.pathname}`;
  let work;
  if (route === 'GET /metadata') {
    send(res, 200, 'application/samlmetadata+xml', idp.getMetadata());
    return;
  }
  if (route === 'GET /healthz') {
    send(res, 200, 'text/plain', 'ok\n');
    return;
  }
  if (route === 'GET /sso') {
    work = handleSso(req, res, url);
  } else {
    send(res, 404, 'text/plain', 'not found\n');
    return;
  }
  work.catch((err) => {
    console.error('saml_idp: error', err);
    if (!res.headersSent) send(res, 500, 'text/plain', `${err && err.stack ? err.stack : err}\n`);
  });
});

server.listen(Number(args.port), '127.0.0.1', async () => {
  const { port } = server.address();
  baseUrl = `http://${args['public-host']}:${port}`;
  buildIdp();
  // Only the warm-up matters, not whether metadata passes the protocol schemas.
  await validator.validate(idp.getMetadata()).catch(() => {});
  console.log(`READY ${JSON.stringify({ port, url: baseUrl })}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
