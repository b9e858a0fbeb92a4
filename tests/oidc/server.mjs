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

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';

import Provider from 'oidc-provider';

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

const provider = new Provider(issuer, {
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
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description || ''));

const callback = provider.callback();
main.on('request', callback);
mtls.on('request', callback);

process.stdout.write(`${JSON.stringify({ issuer, mtls_token_endpoint: mtlsTokenEndpoint })}\n`);
// The test closes stdin when it is done, or kills the process.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
