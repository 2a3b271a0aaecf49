// The peer of `warden-bench tokens`: panva's oidc-provider, configured for the same three cases —
// client_credentials with client_secret_basic, private_key_jwt, and private_key_jwt + DPoP —
// issuing EdDSA-signed JWT access tokens, like Warden. Prints "peer listening on <url>".
// Env: PEER_CLIENT_JWK (the benchmark client's public JWK), PEER_SECRET (its client secret).
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const clientJwk = JSON.parse(process.env.PEER_CLIENT_JWK);
const secret = process.env.PEER_SECRET;
const { privateKey } = generateKeyPairSync('ed25519');
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'peer-1', alg: 'EdDSA', use: 'sig' };

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const common = {
    grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'ledger:write',
    id_token_signed_response_alg: 'EdDSA',
  };
  const provider = new Provider(issuer, {
    clients: [
      { ...common, client_id: 'basic', client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' },
      {
        ...common, client_id: 'pkjwt', token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'EdDSA', jwks: { keys: [clientJwk] },
      },
    ],
    jwks: { keys: [signing] },
    scopes: ['ledger:write'],
    routes: { token: '/oauth2/token' },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://ledger.example',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'ledger:write',
          audience: 'https://ledger.example',
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
          jwt: { sign: { alg: 'EdDSA' } },
        }),
      },
    },
  });
  // The first few refusals, for diagnosis (PEER_ERROR_LOG names a file).
  let logged = 0;
  const log = (ctx, err) => {
    if (process.env.PEER_ERROR_LOG && logged++ < 3) {
      appendFileSync(process.env.PEER_ERROR_LOG, `${err.name}: ${err.message} ${err.error_detail || ''}\n`);
    }
  };
  provider.on('server_error', log);
  provider.on('grant.error', log);
  server.on('request', provider.callback());
  console.log(`peer listening on ${issuer}`);
});
