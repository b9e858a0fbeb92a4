// panva's oidc-provider (an OpenID-certified OAuth 2.0 / OIDC server) for tests/oidc.rs, on
// loopback only. Usage: node server.mjs DIR
//
// DIR holds what the Rust test wrote: server.crt / server.key (TLS for `localhost`, signed by
// ca.pem, which also signs the client certificates) and clients.json, the registered clients.
// clients.json is read again on every client lookup, so the test rotates keys by rewriting it.
// A client entry may name PEM public key files in "jwks_from_pem", or PEM certificate files in
// "jwks_from_cert" (their keys with `x5c`, for self_signed_tls_client_auth); they become its `jwks`.
//
// Two HTTPS listeners serve the same provider: the issuer's (no client certificate asked) and an
// mTLS one (client certificate asked, checked against ca.pem), announced as
// mtls_endpoint_aliases.token_endpoint in the discovery document (RFC 8705 §5).
// The first line on stdout is {"issuer": ..., "mtls_token_endpoint": ...}.
//
// Resource indicators (RFC 8707): a client-credentials request for a resource under
// https://orders.example.com/ gets a JWT access token (RFC 9068) with that audience, signed
// RS256, or ES256 when the resource ends in `es/`. The signing keys are made here; a line
// `rotate` on stdin puts a new RSA and a new EC key first (the old ones stay published), and the
// answer line on stdout is {"rotated": [new kids]}.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';

import Provider, { errors } from 'oidc-provider';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node server.mjs DIR');
  process.exit(2);
}
const read = (name) => fs.readFileSync(path.join(dir, name));

function clientFromDisk(id) {
  const clients = JSON.parse(read('clients.json'));
  const found = clients.find((c) => c.client_id === id);
  if (!found) return undefined;
  const { jwks_from_pem: pems, jwks_from_cert: certs, ...metadata } = found;
  if (pems) {
    metadata.jwks = {
      keys: pems.map((file) => crypto.createPublicKey(fs.readFileSync(file)).export({ format: 'jwk' })),
    };
  }
  if (certs) {
    metadata.jwks = {
      keys: certs.map((file) => {
        const cert = new crypto.X509Certificate(fs.readFileSync(file));
        return { ...cert.publicKey.export({ format: 'jwk' }), x5c: [cert.raw.toString('base64')] };
      }),
    };
  }
  return metadata;
}

// Tokens, grants and replay-detection records in memory; clients from clients.json.
const store = new Map();
class Adapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload) {
    store.set(this.key(id), payload);
  }

  async find(id) {
    if (this.name === 'Client') return clientFromDisk(id);
    return store.get(this.key(id));
  }

  async findByUid(uid) {
    for (const [k, v] of store) {
      if (k.startsWith(`${this.name}:`) && v.uid === uid) return v;
    }
    return undefined;
  }

  async findByUserCode() {
    return undefined;
  }

  async consume(id) {
    const v = store.get(this.key(id));
    if (v) v.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId() {}
}

const tls = { key: read('server.key'), cert: read('server.crt') };
const main = https.createServer(tls);
const mtls = https.createServer({
  ...tls,
  ca: read('ca.pem'),
  requestCert: true,
  rejectUnauthorized: false,
});
const listen = (server) => new Promise((resolve) => {
  server.listen(0, '127.0.0.1', () => resolve(server.address().port));
});
const mainPort = await listen(main);
const mtlsPort = await listen(mtls);
const issuer = `https://localhost:${mainPort}`;
const mtlsTokenEndpoint = `https://localhost:${mtlsPort}/token`;

const peer = (ctx) => (typeof ctx.socket.getPeerX509Certificate === 'function'
  ? ctx.socket.getPeerX509Certificate()
  : undefined);

let generation = 0;
function signingKeys() {
  generation += 1;
  const make = (type, options, kid) => ({
    ...crypto.generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
    kid,
    use: 'sig',
  });
  return [
    make('rsa', { modulusLength: 2048 }, `rsa-${generation}`),
    make('ec', { namedCurve: 'P-256' }, `ec-${generation}`),
  ];
}
let keys = signingKeys();

const configuration = () => ({
  jwks: { keys },
  adapter: Adapter,
  clientAuthMethods: [
    'client_secret_basic',
    'private_key_jwt',
    'tls_client_auth',
    'self_signed_tls_client_auth',
  ],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo(ctx, resource) {
        if (!resource.startsWith('https://orders.example.com/')) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'read:orders write:orders admin:orders',
          audience: resource,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: resource.endsWith('es/') ? 'ES256' : 'RS256' } },
        };
      },
    },
    mTLS: {
      enabled: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate: peer,
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches(ctx, property, expected) {
        const cert = peer(ctx);
        if (!cert || property !== 'tls_client_auth_san_dns') return false;
        return (cert.subjectAltName || '').split(', ').includes(`DNS:${expected}`);
      },
    },
  },
  discovery: {
    mtls_endpoint_aliases: { token_endpoint: mtlsTokenEndpoint },
  },
  // Short-lived tokens, so that the proxy refreshes within a test.
  ttl: { ClientCredentials: 4 },
});
function makeProvider() {
  const p = new Provider(issuer, configuration());
  p.on('server_error', (ctx, err) => console.error('server_error', err));
  p.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description || ''));
  return p;
}
let provider = makeProvider();

let callback = provider.callback();
main.on('request', (req, res) => callback(req, res));
mtls.on('request', (req, res) => callback(req, res));

process.stdout.write(`${JSON.stringify({ issuer, mtls_token_endpoint: mtlsTokenEndpoint })}\n`);
// The test closes stdin when it is done, or kills the process.
process.stdin.on('end', () => process.exit(0));
let pending = '';
process.stdin.on('data', (data) => {
  pending += data.toString();
  let at = pending.indexOf('\n');
  while (at >= 0) {
    const line = pending.slice(0, at).trim();
    pending = pending.slice(at + 1);
    if (line === 'rotate') {
      // A provider's keys are fixed when it is made: the rotated one takes over the listeners,
      // with the same client and token store.
      keys = [...signingKeys(), ...keys];
      provider = makeProvider();
      callback = provider.callback();
      process.stdout.write(`${JSON.stringify({ rotated: [keys[0].kid, keys[1].kid] })}\n`);
    }
    at = pending.indexOf('\n');
  }
});
process.stdin.resume();
