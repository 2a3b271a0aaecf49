//! The token service: `client_credentials` with client secrets or signed client assertions, DPoP
//! binding, RFC 9068 access tokens, introspection and revocation.
//!
//! Every issuance commits its audit event (and the single-use values it consumed) before the
//! token is returned; every refusal is audited with the precise reason, while the client only
//! learns the RFC 6749 error code.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_crypto::token::{self, TokenKind};
use warden_jose::{
    AssertionRules, DpopRequest, JoseError, VerifyingKey, check_assertion, decode, verify_dpop,
};
use warden_types::{
    AuditOutcome, Credential, CredentialKind, Identity, IdentityStatus, Introspection,
    TokenResponse,
};

use super::Registry;
use super::auth::KeyLookup;
use crate::actor::{Actor, Principal};
use crate::error::CoreError;
use crate::lifecycle::check_usable;
use crate::ports::NewAuditEvent;
use crate::scope;

/// How long a DPoP nonce stays current.
const NONCE_WINDOW_SECS: i64 = 300;

/// The client assertion type of RFC 7523 §2.2.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 7523 §2.1: a JWT as an authorization grant (federation).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How a client authenticated at the token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    None,
    /// `client_secret_basic` (`basic`) or `client_secret_post`.
    Secret {
        client_id: String,
        secret: String,
        basic: bool,
    },
    /// `private_key_jwt`.
    Assertion {
        client_id: Option<String>,
        assertion_type: String,
        assertion: String,
    },
    /// `tls_client_auth` or `self_signed_tls_client_auth`: the connection's certificate.
    Tls {
        client_id: String,
    },
}

/// The client certificate of a TLS connection, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// base64url(SHA-256(DER)): the `cnf.x5t#S256` of a certificate-bound token.
    pub x5t_s256: String,
    /// RFC 7638 thumbprint of the certificate's public key (for self-signed certificates).
    pub key_thumbprint: Option<String>,
    /// Whether the chain verified against the configured client CA.
    pub chain_valid: bool,
    /// URI subject alternative names (e.g. SPIFFE IDs).
    pub san_uris: Vec<String>,
    /// DNS subject alternative names.
    pub san_dns: Vec<String>,
    /// The certificate's `notAfter`: tokens bound to it do not outlive it.
    pub not_after: Option<OffsetDateTime>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::None => f.write_str("ClientAuth::None"),
            ClientAuth::Secret {
                client_id, basic, ..
            } => write!(
                f,
                "ClientAuth::Secret({client_id}, basic={basic}, [redacted])"
            ),
            ClientAuth::Assertion { client_id, .. } => {
                write!(f, "ClientAuth::Assertion({client_id:?}, [redacted])")
            }
            ClientAuth::Tls { client_id } => write!(f, "ClientAuth::Tls({client_id})"),
        }
    }
}

impl ClientAuth {
    fn method(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Secret { basic: true, .. } => "client_secret_basic",
            ClientAuth::Secret { .. } => "client_secret_post",
            ClientAuth::Assertion { .. } => "private_key_jwt",
            ClientAuth::Tls { .. } => "tls_client_auth",
        }
    }

    fn basic(&self) -> bool {
        matches!(self, ClientAuth::Secret { basic: true, .. })
    }

    fn claimed_client(&self) -> Option<&str> {
        match self {
            ClientAuth::None => None,
            ClientAuth::Secret { client_id, .. } => Some(client_id),
            ClientAuth::Assertion { client_id, .. } => client_id.as_deref(),
            ClientAuth::Tls { client_id } => Some(client_id),
        }
    }
}

/// A token request as the HTTP layer parsed it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant_type: String,
    pub client: ClientAuth,
    /// RFC 7523 §2.1 (`jwt-bearer` grant): the external token.
    pub assertion: Option<String>,
    /// RFC 8693 token exchange.
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub actor_token: Option<String>,
    /// RFC 8693 `audience` (treated like a `resource`).
    pub audience: Option<String>,
    pub scope: Option<String>,
    /// RFC 8707 `resource` parameters.
    pub resources: Vec<String>,
    /// The `DPoP` header, if any.
    pub dpop: Option<String>,
    /// The connection's client certificate, under TLS.
    pub client_cert: Option<Arc<ClientCert>>,
    pub request_id: String,
    pub source: String,
    /// The `User-Agent` header (anomaly detection: interactive use).
    pub user_agent: Option<String>,
}

/// RFC 6749 §5.2 errors (and RFC 8707's, RFC 9449's). The description never says which check
/// failed beyond what the code says; the audit event does.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    #[error("invalid_client")]
    InvalidClient { basic: bool },
    #[error("invalid_grant")]
    InvalidGrant,
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("invalid_scope")]
    InvalidScope,
    #[error("invalid_target")]
    InvalidTarget,
    #[error("invalid_dpop_proof")]
    InvalidDpopProof,
    /// The proof lacks the current server nonce; the client retries with this one.
    #[error("use_dpop_nonce")]
    UseDpopNonce(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl OAuthError {
    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::InvalidTarget => "invalid_target",
            OAuthError::InvalidDpopProof => "invalid_dpop_proof",
            OAuthError::UseDpopNonce(_) => "use_dpop_nonce",
            OAuthError::Core(CoreError::Throttled { .. }) => "slow_down",
            OAuthError::Core(CoreError::Unauthenticated(_)) => "invalid_client",
            OAuthError::Core(_) => "server_error",
        }
    }

    /// The `error_description` a client may see.
    pub fn description(&self) -> String {
        match self {
            OAuthError::InvalidRequest(why) => why.clone(),
            OAuthError::InvalidClient { .. } => "client authentication failed".into(),
            OAuthError::InvalidGrant => "the grant is invalid".into(),
            OAuthError::UnauthorizedClient(why) => (*why).into(),
            OAuthError::UnsupportedGrantType => {
                "supported: client_credentials, jwt-bearer (RFC 7523), token-exchange (RFC 8693)"
                    .into()
            }
            OAuthError::InvalidScope => {
                "the requested scope is invalid or exceeds what this client was granted".into()
            }
            OAuthError::InvalidTarget => {
                "a requested resource is not among this client's allowed audiences".into()
            }
            OAuthError::InvalidDpopProof => "the DPoP proof is invalid".into(),
            OAuthError::UseDpopNonce(_) => {
                "the DPoP proof must carry the nonce given in the DPoP-Nonce header".into()
            }
            OAuthError::Core(CoreError::Throttled { retry_after_secs }) => {
                format!("too many failed attempts; retry in {retry_after_secs}s")
            }
            OAuthError::Core(CoreError::Store(_)) => "the service is unavailable".into(),
            OAuthError::Core(CoreError::Unauthenticated(_)) => "authentication failed".into(),
            OAuthError::Core(_) => "the request could not be processed".into(),
        }
    }
}

/// A failure with its precise reason (for the audit log only).
struct Refusal {
    error: OAuthError,
    reason: String,
    identity: Option<Uuid>,
}

fn refuse(error: OAuthError, reason: impl Into<String>, identity: Option<Uuid>) -> Refusal {
    Refusal {
        error,
        reason: reason.into(),
        identity,
    }
}

/// The subject token of a delegated exchange, after checking the request's shape.
fn exchange_subject(req: &TokenRequest) -> Result<&str, Refusal> {
    let invalid = |m: &str| refuse(OAuthError::InvalidRequest(m.into()), m.to_owned(), None);
    if !matches!(req.client, ClientAuth::None) {
        return Err(invalid(
            "a delegated exchange takes no client authentication: the actor token is the agent's",
        ));
    }
    if !matches!(
        req.subject_token_type.as_deref(),
        Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ID_TOKEN | TOKEN_TYPE_ACCESS_TOKEN)
    ) {
        return Err(invalid(
            "subject_token_type must be a jwt, id_token or access_token",
        ));
    }
    if !matches!(
        req.requested_token_type.as_deref(),
        None | Some(TOKEN_TYPE_ACCESS_TOKEN | TOKEN_TYPE_JWT)
    ) {
        return Err(invalid("only access tokens are issued"));
    }
    req.subject_token
        .as_deref()
        .ok_or_else(|| invalid("token exchange needs a subject_token"))
}

/// The external token of a federation request, after checking the request's shape.
fn federation_subject(req: &TokenRequest) -> Result<&str, Refusal> {
    let invalid = |m: &str| refuse(OAuthError::InvalidRequest(m.into()), m.to_owned(), None);
    if !matches!(req.client, ClientAuth::None) {
        return Err(invalid(
            "federation takes no client authentication: the subject token is the credential",
        ));
    }
    if req.grant_type == JWT_BEARER_GRANT {
        return req
            .assertion
            .as_deref()
            .ok_or_else(|| invalid("the jwt-bearer grant needs an assertion"));
    }
    if req.actor_token.is_some() {
        return Err(invalid("delegation (actor_token) is not supported yet"));
    }
    if !matches!(
        req.subject_token_type.as_deref(),
        Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ID_TOKEN)
    ) {
        return Err(invalid(
            "subject_token_type must be urn:ietf:params:oauth:token-type:jwt or id_token",
        ));
    }
    if !matches!(
        req.requested_token_type.as_deref(),
        None | Some(TOKEN_TYPE_ACCESS_TOKEN | TOKEN_TYPE_JWT)
    ) {
        return Err(invalid("only access tokens are issued"));
    }
    req.subject_token
        .as_deref()
        .ok_or_else(|| invalid("token exchange needs a subject_token"))
}

fn i_require_binding(identity: &Identity) -> bool {
    identity
        .constraints
        .require_sender_constraint
        .unwrap_or(identity.environment == "prod")
}

/// A checked `/v1` access token, its identity, and — with a shared store — the DPoP proof's
/// single-use value to record there (hash, keep until).
type ApiToken = (
    warden_jose::AccessToken,
    Identity,
    Option<([u8; 32], OffsetDateTime)>,
);

/// DPoP proofs seen by Warden's own API on this node, until they could no longer be accepted.
#[derive(Debug, Default)]
pub struct SeenProofs(std::sync::Mutex<std::collections::HashMap<[u8; 32], OffsetDateTime>>);

/// Most proofs remembered; beyond it, expired ones are dropped, and failing that, new proofs are
/// refused (fail closed) until some expire.
const MAX_SEEN_PROOFS: usize = 1_000_000;

impl SeenProofs {
    /// Records a proof; `false` if it was seen before (or the memory is full).
    fn first_use(&self, hash: [u8; 32], now: OffsetDateTime, keep_until: OffsetDateTime) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        if m.len() >= MAX_SEEN_PROOFS {
            m.retain(|_, until| *until > now);
            if m.len() >= MAX_SEEN_PROOFS {
                return false;
            }
        }
        m.insert(hash, keep_until).is_none()
    }
}

/// Whether `ip` is inside `cidr` (`a.b.c.d/n`, `x::/n`, or a bare address).
pub fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, bits) = match cidr.split_once('/') {
        Some((n, b)) => (n, b.parse::<u32>().ok()),
        None => (cidr, None),
    };
    match (ip, net.parse::<IpAddr>()) {
        (IpAddr::V4(a), Ok(IpAddr::V4(n))) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), Ok(IpAddr::V6(n))) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A client's identity and its usable-looking public keys, parsed once.
pub(crate) struct ClientKeys {
    identity: Identity,
    keys: Vec<(Credential, warden_jose::JwkKey)>,
}

/// What a successful client authentication yields.
struct Authenticated {
    identity: Identity,
    /// The credential used; none for `tls_client_auth` (the CA vouches, not a registered key).
    credential: Option<Credential>,
    /// The method that succeeded (for the audit event).
    method: &'static str,
    /// Bind the token to the connection's certificate (mTLS client authentication).
    x5t: Option<String>,
    /// Single-use values consumed (keyed hash, keep until).
    once: Vec<([u8; 32], OffsetDateTime)>,
}

impl Registry {
    /// The issuer URL; set once the server knows its address.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.get().map(String::as_str)
    }

    /// Sets the issuer URL (the server's public base URL, no trailing slash). Only the first call
    /// counts.
    pub fn set_issuer(&self, url: &str) {
        let _ = self.issuer.set(url.trim_end_matches('/').to_owned());
    }

    /// The current DPoP nonce: a keyed hash of the 5-minute window, so every node that shares
    /// the server key agrees without shared state.
    pub fn dpop_nonce(&self, now: OffsetDateTime) -> String {
        self.nonce_for(now.unix_timestamp().div_euclid(NONCE_WINDOW_SECS))
    }

    /// Whether the server requires DPoP nonces (and so sends `DPoP-Nonce`).
    pub fn dpop_nonces_required(&self) -> bool {
        self.policy.tokens.dpop_nonce
    }

    fn nonce_for(&self, window: i64) -> String {
        let mac = self
            .secret_hasher
            .hash(format!("dpop-nonce\0{window}").as_bytes());
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &mac[..18],
        )
    }

    /// The current or the previous window's nonce (a client may have fetched it just before the
    /// window turned).
    fn dpop_nonce_valid(&self, nonce: &str, now: OffsetDateTime) -> bool {
        let w = now.unix_timestamp().div_euclid(NONCE_WINDOW_SECS);
        [w, w - 1]
            .iter()
            .any(|w| warden_crypto::ct_eq(self.nonce_for(*w).as_bytes(), nonce.as_bytes()))
    }

    pub(crate) fn once_hash(&self, kind: &str, scope: &str, value: &str) -> [u8; 32] {
        self.secret_hasher
            .hash(format!("once\0{kind}\0{scope}\0{value}").as_bytes())
    }

    /// A client's identity and public keys: cached, invalidated with every change that can alter
    /// an authentication answer (like the API-key cache).
    fn client_keys(&self, id: Uuid) -> Result<Option<Arc<ClientKeys>>, CoreError> {
        if let Some(hit) = self.clients.get(&id) {
            return Ok(Some(hit));
        }
        let generation = self.clients.generation();
        let store = self.reader()?;
        let Some(identity) = store.identity(id)? else {
            return Ok(None);
        };
        let keys = store
            .credentials_of(id)?
            .into_iter()
            .filter(|c| c.kind == CredentialKind::PublicKey && c.revoked_at.is_none())
            .filter_map(|c| {
                let key = VerifyingKey::from_jwk(c.public_jwk.as_ref()?).ok()?;
                Some((c, key))
            })
            .collect();
        let entry = Arc::new(ClientKeys { identity, keys });
        self.clients.put(id, generation, Arc::clone(&entry));
        Ok(Some(entry))
    }

    /// Authenticates the client of a token, introspection or revocation request.
    fn authenticate_client(
        &self,
        client: &ClientAuth,
        cert: Option<&ClientCert>,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<Authenticated, Refusal> {
        let invalid = |why: &str, id: Option<Uuid>| {
            refuse(
                OAuthError::InvalidClient {
                    basic: client.basic(),
                },
                why,
                id,
            )
        };
        match client {
            ClientAuth::None => Err(invalid("no client authentication", None)),
            ClientAuth::Tls { client_id } => {
                let id = Uuid::parse_str(client_id)
                    .map_err(|_| invalid("client_id is not an identity id", None))?;
                let cert = cert.ok_or_else(|| invalid("no client certificate", Some(id)))?;
                let client = self
                    .client_keys(id)
                    .map_err(|e| refuse(e.into(), "store", Some(id)))?
                    .ok_or_else(|| invalid("unknown client", Some(id)))?;
                let identity = client.identity.clone();
                // self_signed_tls_client_auth: the certificate holds a key the client registered.
                let registered = client.keys.iter().find(|(c, key)| {
                    c.revoked_at.is_none()
                        && c.expires_at > now
                        && cert.key_thumbprint.as_deref() == Some(key.thumbprint.as_str())
                });
                if let Some((c, _)) = registered {
                    check_usable(c, &identity, now).map_err(|why| invalid(why, Some(id)))?;
                    return Ok(Authenticated {
                        identity,
                        credential: Some(c.clone()),
                        method: "self_signed_tls_client_auth",
                        x5t: Some(cert.x5t_s256.clone()),
                        once: Vec::new(),
                    });
                }
                // tls_client_auth: issued by the client CA, with the SAN the identity names.
                let san = identity.constraints.tls_client_auth_san.as_deref();
                if !cert.chain_valid {
                    return Err(invalid(
                        "certificate neither registered nor issued by the client CA",
                        Some(id),
                    ));
                }
                // A SAN with a scheme is matched against URI SANs only, else against DNS SANs.
                let matches = |s: &str| {
                    let pool = if s.contains("://") {
                        &cert.san_uris
                    } else {
                        &cert.san_dns
                    };
                    pool.iter().any(|c| c == s)
                };
                if !san.is_some_and(matches) {
                    return Err(invalid(
                        "certificate SAN does not match the identity's tls_client_auth_san",
                        Some(id),
                    ));
                }
                if identity.status != IdentityStatus::Active
                    || identity.expires_at.is_some_and(|e| e <= now)
                {
                    return Err(invalid("identity not active", Some(id)));
                }
                Ok(Authenticated {
                    identity,
                    credential: None,
                    method: "tls_client_auth",
                    x5t: Some(cert.x5t_s256.clone()),
                    once: Vec::new(),
                })
            }
            ClientAuth::Secret {
                client_id, secret, ..
            } => {
                let id = Uuid::parse_str(client_id).ok();
                match token::parse(secret) {
                    Ok(TokenKind::ClientSecret) => {}
                    Ok(_) => return Err(invalid("not a client secret", id)),
                    Err(e) => return Err(invalid(&format!("malformed secret: {e}"), id)),
                }
                let hash = self.secret_hasher.hash(secret.as_bytes());
                let found = self
                    .key_lookup(&hash)
                    .map_err(|e| refuse(e.into(), "store", id))?;
                let KeyLookup::Found(pair) = found else {
                    return Err(invalid("unknown secret", id));
                };
                let (c, i) = &*pair;
                if c.kind != CredentialKind::ClientSecret || Some(i.id) != id {
                    return Err(invalid("secret does not belong to client_id", id));
                }
                check_usable(c, i, now).map_err(|why| invalid(why, id))?;
                Ok(Authenticated {
                    identity: i.clone(),
                    credential: Some(c.clone()),
                    method: client.method(),
                    x5t: None,
                    once: Vec::new(),
                })
            }
            ClientAuth::Assertion {
                client_id,
                assertion_type,
                assertion,
            } => {
                let claimed = client_id.as_deref().and_then(|c| Uuid::parse_str(c).ok());
                if assertion_type != JWT_BEARER_ASSERTION {
                    return Err(invalid("unknown client_assertion_type", claimed));
                }
                let jws =
                    decode(assertion).map_err(|e| invalid(&format!("assertion: {e}"), claimed))?;
                let iss = jws
                    .str_claim("iss")
                    .map_err(|e| invalid(&format!("assertion: {e}"), claimed))?;
                let id = Uuid::parse_str(iss)
                    .map_err(|_| invalid("assertion iss is not a client id", claimed))?;
                if client_id.as_deref().is_some_and(|c| c != iss) {
                    return Err(invalid(
                        "client_id differs from the assertion's iss",
                        Some(id),
                    ));
                }
                let client = self
                    .client_keys(id)
                    .map_err(|e| refuse(e.into(), "store", Some(id)))?
                    .ok_or_else(|| invalid("unknown client", Some(id)))?;
                let identity = client.identity.clone();
                let kid = jws.header.kid.as_deref();
                let mut matched = None;
                for (c, key) in client
                    .keys
                    .iter()
                    .filter(|(c, _)| c.revoked_at.is_none() && c.expires_at > now)
                {
                    if kid.is_some_and(|k| key.kid.as_deref() != Some(k) && key.thumbprint != k) {
                        continue;
                    }
                    if key.verify(&jws).is_ok() {
                        matched = Some(c.clone());
                        break;
                    }
                }
                let credential = matched.ok_or_else(|| {
                    invalid("assertion signature matches no key of the client", Some(id))
                })?;
                check_usable(&credential, &identity, now).map_err(|why| invalid(why, Some(id)))?;
                let token_endpoint = format!("{issuer}/oauth2/token");
                let tokens = &self.policy.tokens;
                let claims = check_assertion(
                    &jws,
                    &AssertionRules {
                        client_id: iss,
                        audiences: &[token_endpoint.as_str(), issuer],
                        now: now.unix_timestamp(),
                        max_lifetime_secs: tokens.assertion_max_lifetime.whole_seconds(),
                        leeway_secs: tokens.clock_leeway.whole_seconds(),
                    },
                )
                .map_err(|e| invalid(&format!("assertion: {e}"), Some(id)))?;
                // Derived from the assertion itself, so a replay computes the same key (the store
                // keys single-use values by `(keep_until, hash)`, in time order).
                let keep = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or(now)
                    + tokens.clock_leeway;
                Ok(Authenticated {
                    once: vec![(self.once_hash("assertion", iss, &claims.jti), keep)],
                    identity,
                    credential: Some(credential),
                    method: "private_key_jwt",
                    x5t: None,
                })
            }
        }
    }

    /// Issues an access token (`client_credentials`).
    pub async fn issue_token(&self, req: TokenRequest) -> Result<TokenResponse, OAuthError> {
        let now = self.now();
        if let Some(retry_after_secs) = self.failures.throttled(&req.source, now, &self.policy) {
            return Err(CoreError::Throttled { retry_after_secs }.into());
        }
        let method = req.client.method();
        match self.try_issue(&req, now).await {
            Ok(ok) => {
                self.tokens_issued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(ok)
            }
            Err(r) => {
                self.tokens_denied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let event = NewAuditEvent {
                    actor: match r.identity {
                        Some(id) => format!("identity:{id}"),
                        None => "anonymous".into(),
                    },
                    action: "token.denied",
                    target: match (r.identity, req.client.claimed_client()) {
                        (Some(id), _) => format!("identity:{id}"),
                        (None, Some(c)) => {
                            format!("client:{}", c.chars().take(64).collect::<String>())
                        }
                        (None, None) => "client:unknown".into(),
                    },
                    outcome: AuditOutcome::Failure,
                    request_id: req.request_id.clone(),
                    source: req.source.clone(),
                    details: json!({
                        "error": r.error.code(),
                        "reason": r.reason,
                        "method": method,
                    })
                    .to_string(),
                };
                if matches!(r.error, OAuthError::InvalidClient { .. }) {
                    self.failures.fail(&req.source, now, &self.policy);
                }
                self.record_authentication(event).await?;
                Err(r.error)
            }
        }
    }

    async fn try_issue(
        &self,
        req: &TokenRequest,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, Refusal> {
        let issuer = self
            .issuer()
            .ok_or_else(|| {
                refuse(
                    CoreError::InvalidState("the issuer URL is not set".into()).into(),
                    "no issuer",
                    None,
                )
            })?
            .to_owned();
        let mut federated = None;
        let mut delegated: Option<super::delegation::Delegated> = None;
        let Authenticated {
            identity: i,
            credential: c,
            mut once,
            method,
            x5t,
        } = match req.grant_type.as_str() {
            "client_credentials" => {
                self.authenticate_client(&req.client, req.client_cert.as_deref(), &issuer, now)?
            }
            TOKEN_EXCHANGE_GRANT if req.actor_token.is_some() => {
                let subject = exchange_subject(req)?;
                let actor = req.actor_token.as_deref().unwrap_or_default();
                let d = self.delegate(subject, actor, &issuer, now).await.map_err(
                    |(scope, reason)| {
                        let e = if scope {
                            OAuthError::InvalidScope
                        } else {
                            OAuthError::InvalidGrant
                        };
                        refuse(e, reason, None)
                    },
                )?;
                let a = Authenticated {
                    identity: d.agent.clone(),
                    credential: None,
                    method: "delegation",
                    x5t: None,
                    once: d.once.into_iter().collect(),
                };
                delegated = Some(d);
                a
            }
            JWT_BEARER_GRANT | TOKEN_EXCHANGE_GRANT => {
                let subject = federation_subject(req)?;
                let f = self
                    .federate(subject, now)
                    .await
                    .map_err(|reason| refuse(OAuthError::InvalidGrant, reason, None))?;
                let a = Authenticated {
                    identity: f.identity.clone(),
                    credential: None,
                    method: "federation",
                    x5t: None,
                    once: f.once.into_iter().collect(),
                };
                federated = Some(f);
                a
            }
            other => {
                return Err(refuse(
                    OAuthError::UnsupportedGrantType,
                    format!(
                        "grant_type {:?}",
                        other.chars().take(64).collect::<String>()
                    ),
                    None,
                ));
            }
        };
        let id = Some(i.id);
        let tokens = &self.policy.tokens;

        if !i.constraints.allowed_networks.is_empty() {
            let ip: Option<IpAddr> = req.source.parse().ok();
            if !ip.is_some_and(|ip| {
                i.constraints
                    .allowed_networks
                    .iter()
                    .any(|n| in_cidr(ip, n))
            }) {
                return Err(refuse(
                    OAuthError::UnauthorizedClient(
                        "this client may not request tokens from this network",
                    ),
                    format!("source {} outside allowed networks", req.source),
                    id,
                ));
            }
        }

        // Scope: a subset of what the identity holds; nothing asked means everything held.
        let granted: &[String] = match &delegated {
            Some(d) => &d.allowed,
            None => &i.scopes,
        };
        let scopes: Vec<String> = match req.scope.as_deref().map(str::trim) {
            None | Some("") => granted.to_vec(),
            Some(s) => {
                let asked: Vec<String> = s
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                for a in &asked {
                    if scope::check(a).is_err() || !granted.iter().any(|g| scope::covers(g, a)) {
                        return Err(refuse(
                            OAuthError::InvalidScope,
                            format!("scope {a:?} not granted"),
                            id,
                        ));
                    }
                }
                asked
            }
        };

        // Audience (RFC 8707): each resource must be allowed; none asked means the defaults.
        let mut resources = req.resources.clone();
        if let Some(a) = &req.audience {
            resources.push(a.clone());
        }
        let audiences: Vec<String> = if let Some(d) = &delegated {
            // A delegated token is for the delegation's one resource.
            if resources.iter().any(|r| *r != d.audience) {
                return Err(refuse(
                    OAuthError::InvalidTarget,
                    "a delegated token is only for the delegation's audience",
                    id,
                ));
            }
            vec![d.audience.clone()]
        } else if resources.is_empty() {
            if i.audiences.is_empty() {
                vec![issuer.clone()]
            } else {
                i.audiences.clone()
            }
        } else {
            for r in &resources {
                if r.contains('#') || !r.contains("://") {
                    return Err(refuse(
                        OAuthError::InvalidTarget,
                        format!(
                            "resource {:?} is not an absolute URI",
                            r.chars().take(200).collect::<String>()
                        ),
                        id,
                    ));
                }
                if !i.audiences.iter().any(|a| a == r) {
                    return Err(refuse(
                        OAuthError::InvalidTarget,
                        format!(
                            "resource {:?} not allowed",
                            r.chars().take(200).collect::<String>()
                        ),
                        id,
                    ));
                }
            }
            resources
        };

        // Sender constraint.
        let mut jkt = None;
        if let Some(proof) = &req.dpop {
            let token_endpoint = format!("{issuer}/oauth2/token");
            let p = verify_dpop(
                proof,
                &DpopRequest {
                    method: "POST",
                    url: &token_endpoint,
                    now: now.unix_timestamp(),
                    max_age_secs: tokens.dpop_max_age.whole_seconds(),
                    leeway_secs: tokens.clock_leeway.whole_seconds(),
                    access_token: None,
                    nonce: None,
                },
            )
            .map_err(|e: JoseError| {
                refuse(OAuthError::InvalidDpopProof, format!("dpop: {e}"), id)
            })?;
            if tokens.dpop_nonce {
                let sent = decode(proof)
                    .ok()
                    .and_then(|j| j.opt_str_claim("nonce").ok().flatten().map(str::to_owned));
                if !sent.is_some_and(|n| self.dpop_nonce_valid(&n, now)) {
                    return Err(refuse(
                        OAuthError::UseDpopNonce(self.dpop_nonce(now)),
                        "dpop: nonce missing or stale",
                        id,
                    ));
                }
            }
            once.push((
                self.once_hash("dpop", &p.jkt, &p.jti),
                // From the proof's own `iat`, like the assertion's `exp` above.
                OffsetDateTime::from_unix_timestamp(p.iat).unwrap_or(now)
                    + tokens.dpop_max_age
                    + tokens.clock_leeway * 2,
            ));
            jkt = Some(p.jkt);
        }
        if let Some(d) = &delegated
            && d.agent_jkt.is_some()
            && jkt != d.agent_jkt
        {
            return Err(refuse(
                OAuthError::InvalidDpopProof,
                "the agent's token is bound to a key: the exchange must prove it",
                id,
            ));
        }
        if i_require_binding(&i) && jkt.is_none() && x5t.is_none() {
            return Err(refuse(
                OAuthError::InvalidRequest(
                    "this client must bind its tokens: send a DPoP proof or use mutual TLS".into(),
                ),
                "sender constraint required",
                id,
            ));
        }

        // Lifetime: the default, lowered by every cap that applies.
        let mut ttl = tokens.default_ttl.min(tokens.max_ttl);
        if let Some(s) = i.constraints.max_token_ttl_seconds {
            ttl = ttl.min(time::Duration::seconds(
                i64::try_from(s).unwrap_or(i64::MAX),
            ));
        }
        if let Some(c) = &c {
            ttl = ttl.min(c.expires_at - now);
        }
        if x5t.is_some()
            && let Some(not_after) = req.client_cert.as_ref().and_then(|c| c.not_after)
        {
            ttl = ttl.min(not_after - now);
        }
        if let Some(e) = i.expires_at {
            ttl = ttl.min(e - now);
        }
        if let Some(f) = &federated {
            ttl = ttl.min(time::Duration::seconds(
                i64::try_from(f.rule.max_ttl_secs).unwrap_or(0),
            ));
        }
        if let Some(d) = &delegated {
            ttl = ttl.min(d.not_after - now);
        }
        let ttl_secs = ttl.whole_seconds();
        if ttl_secs < 1 {
            return Err(refuse(
                OAuthError::InvalidClient {
                    basic: req.client.basic(),
                },
                "no lifetime left",
                id,
            ));
        }

        let ring = self.keyring();
        let signer = ring.signer.clone().ok_or_else(|| {
            refuse(
                CoreError::InvalidState("no signing key".into()).into(),
                "no signing key",
                id,
            )
        })?;
        let jti = Uuid::now_v7().to_string();
        let iat = now.unix_timestamp();
        let exp = iat + ttl_secs;
        let scope_str = scopes.join(" ");
        let mut claims = json!({
            "iss": issuer,
            "sub": i.id.to_string(),
            "client_id": i.id.to_string(),
            "aud": if audiences.len() == 1 { Value::String(audiences[0].clone()) } else { json!(audiences) },
            "exp": exp,
            "iat": iat,
            "nbf": iat,
            "jti": jti,
            "scope": scope_str,
            // The identity's environment: resource servers can refuse tokens of another one.
            "env": i.environment,
        });
        if let Some(c) = &c {
            // The credential it was obtained with: revoking that credential ends the token.
            claims["cid"] = json!(c.id);
        }
        if let Some(j) = &jkt {
            claims["cnf"] = json!({ "jkt": j });
        }
        if let Some(x) = &x5t {
            claims["cnf"]["x5t#S256"] = json!(x);
        }
        if let Some(d) = &delegated {
            // RFC 8693 §4.1: the principal is the subject; the agents act for it.
            claims["sub"] = json!(d.subject);
            claims["act"] = d.act.clone();
            claims["del"] = json!(d.chain);
            if let Some(iss) = &d.subject_issuer {
                claims["sub_iss"] = json!(iss);
            }
        }
        if let Some(f) = &federated {
            // Who the platform said the caller was, and the rule that let it in.
            claims["fed"] = json!({ "iss": f.issuer.issuer, "sub": f.subject, "rule": f.rule.id });
        }
        let access_token = signer.sign("at+jwt", &claims).map_err(|e| {
            refuse(
                CoreError::InvalidState(e.to_string()).into(),
                "signing failed",
                id,
            )
        })?;

        // Commit the single-use values and the audit event before answering.
        let event = NewAuditEvent {
            actor: format!("identity:{}", i.id),
            action: "token.issued",
            target: format!("identity:{}", i.id),
            outcome: AuditOutcome::Success,
            request_id: req.request_id.clone(),
            source: req.source.clone(),
            details: json!({
                "method": method,
                "credential": c.as_ref().map(|c| c.id),
                "jti": jti,
                "scope": scope_str,
                "aud": audiences,
                "exp": exp,
                "binding": match (&jkt, &x5t) {
                    (Some(_), _) => "dpop",
                    (None, Some(_)) => "mtls",
                    _ => "bearer",
                },
                "delegation": delegated.as_ref().map(|d| json!({
                    "subject": d.subject, "subject_issuer": d.subject_issuer,
                    "act": d.act, "chain": d.chain,
                })),
                "federation": federated.as_ref().map(|f| json!({
                    "issuer": f.issuer.name, "sub": f.subject, "rule": f.rule.id,
                })),
            })
            .to_string(),
        };
        let written = self
            .write(move |tx, job| {
                for (kind, (hash, keep)) in once.iter().enumerate() {
                    if !tx.use_once(hash, *keep)? {
                        return Ok(Some(kind));
                    }
                }
                crate::audit::append(tx, job.now(), event)?;
                Ok(None)
            })
            .await
            .map_err(|e| refuse(e.into(), "store", id))?;
        if let Some(which) = written {
            // The job wrote nothing (see above): which value was a replay decides the error.
            let assertion_first = matches!(req.client, ClientAuth::Assertion { .. });
            let subject_first = federated.as_ref().is_some_and(|f| f.once.is_some())
                || delegated.as_ref().is_some_and(|d| d.once.is_some());
            return Err(if which == 0 && subject_first {
                refuse(OAuthError::InvalidGrant, "subject token replayed", id)
            } else if which == 0 && assertion_first {
                refuse(
                    OAuthError::InvalidClient { basic: false },
                    "assertion jti replayed",
                    id,
                )
            } else {
                refuse(OAuthError::InvalidDpopProof, "dpop jti replayed", id)
            });
        }
        self.observe_usage(&super::anomaly::Use {
            identity: &i,
            credential: c.as_ref().map(|c| c.id),
            scopes: &scopes,
            audiences: &audiences,
            source: &req.source,
            user_agent: req.user_agent.as_deref(),
            at: now,
        });
        Ok(TokenResponse {
            access_token,
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" }.into(),
            expires_in: u64::try_from(ttl_secs).unwrap_or(0),
            scope: scope_str,
            issued_token_type: (req.grant_type == TOKEN_EXCHANGE_GRANT)
                .then(|| TOKEN_TYPE_ACCESS_TOKEN.to_owned()),
        })
    }

    /// Who may introspect or revoke: an operator, or a client authenticated at the endpoint.
    /// Authenticates the client of an introspection or revocation request, as at the token
    /// endpoint; a failure is audited (`client.authenticate`) and counts towards the throttle.
    pub async fn authenticate_endpoint_client(
        &self,
        client: &ClientAuth,
        cert: Option<&ClientCert>,
        request_id: &str,
        source: &str,
    ) -> Result<Actor, OAuthError> {
        let now = self.now();
        if let Some(retry_after_secs) = self.failures.throttled(source, now, &self.policy) {
            return Err(CoreError::Throttled { retry_after_secs }.into());
        }
        let issuer = self
            .issuer()
            .ok_or_else(|| CoreError::InvalidState("the issuer URL is not set".into()))?
            .to_owned();
        // An assertion is single-use here too: record its jti before accepting it.
        let authenticated = match self.authenticate_client(client, cert, &issuer, now) {
            Ok(a) if a.once.is_empty() => Ok(a),
            Ok(a) => {
                let once = a.once.clone();
                let fresh = self
                    .write(move |tx, _| {
                        for (hash, keep) in &once {
                            if !tx.use_once(hash, *keep)? {
                                return Err(CoreError::AlreadyExists("replay".into()));
                            }
                        }
                        Ok(())
                    })
                    .await;
                match fresh {
                    Ok(()) => Ok(a),
                    Err(CoreError::AlreadyExists(_)) => Err(refuse(
                        OAuthError::InvalidClient { basic: false },
                        "assertion jti replayed",
                        Some(a.identity.id),
                    )),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(r) => Err(r),
        };
        // The identity's network constraint applies here as at the token endpoint.
        let authenticated = authenticated.and_then(|a| {
            let nets = &a.identity.constraints.allowed_networks;
            let ip: Option<IpAddr> = source.parse().ok();
            if nets.is_empty() || ip.is_some_and(|ip| nets.iter().any(|n| in_cidr(ip, n))) {
                Ok(a)
            } else {
                let id = Some(a.identity.id);
                Err(refuse(
                    OAuthError::UnauthorizedClient("this client may not call from this network"),
                    format!("source {source} outside allowed networks"),
                    id,
                ))
            }
        });
        match authenticated {
            Ok(a) => Ok(Actor {
                principal: Principal::Identity {
                    id: a.identity.id,
                    name: a.identity.name,
                    credential_id: a.credential.map(|c| c.id),
                    token_scopes: None,
                },
                request_id: request_id.to_owned(),
                source: source.to_owned(),
            }),
            Err(r) => {
                self.failures.fail(source, now, &self.policy);
                self.record_authentication(NewAuditEvent {
                    actor: r
                        .identity
                        .map_or_else(|| "anonymous".into(), |id| format!("identity:{id}")),
                    action: "client.authenticate",
                    target: r
                        .identity
                        .map_or_else(|| "client:unknown".into(), |id| format!("identity:{id}")),
                    outcome: AuditOutcome::Failure,
                    request_id: request_id.to_owned(),
                    source: source.to_owned(),
                    details: json!({ "reason": r.reason, "method": client.method() }).to_string(),
                })
                .await?;
                Err(r.error)
            }
        }
    }

    /// Authenticates a caller of Warden's own API by an access token (audience: the issuer). A
    /// DPoP-bound token needs `dpop_scheme` and a proof for this request (`method`, `path`) bound
    /// to the token (`ath`), signed by the token's key, not seen before on this node.
    #[allow(
        clippy::too_many_arguments,
        reason = "one request's parts, passed through"
    )]
    pub async fn authenticate_access_token(
        &self,
        token: &str,
        dpop_scheme: bool,
        proof: Option<&str>,
        cert: Option<&ClientCert>,
        method: &str,
        path: &str,
        anonymous: &Actor,
    ) -> Result<Actor, CoreError> {
        let now = self.now();
        if let Some(retry_after_secs) =
            self.failures
                .throttled(&anonymous.source, now, &self.policy)
        {
            return Err(CoreError::Throttled { retry_after_secs });
        }
        let mut checked = self.check_api_token(token, dpop_scheme, proof, cert, method, path, now);
        if let Ok((_, identity, Some((once, keep)))) = &checked {
            let (once, keep, who) = (*once, *keep, Some(identity.id));
            if !self
                .write(move |tx, _| Ok(tx.use_once(&once, keep)?))
                .await?
            {
                checked = Err(("DPoP proof replayed (on another node)".into(), who));
            }
        }
        match checked {
            Ok((at, identity, _)) => Ok(Actor {
                principal: Principal::Identity {
                    id: identity.id,
                    name: identity.name,
                    credential_id: None,
                    token_scopes: Some(at.scope),
                },
                request_id: anonymous.request_id.clone(),
                source: anonymous.source.clone(),
            }),
            Err((why, who)) => {
                self.failures.fail(&anonymous.source, now, &self.policy);
                self.record_authentication(NewAuditEvent {
                    actor: anonymous.label(),
                    action: "token.authenticate",
                    target: who
                        .map_or_else(|| "identity:unknown".into(), |id| format!("identity:{id}")),
                    outcome: AuditOutcome::Failure,
                    request_id: anonymous.request_id.clone(),
                    source: anonymous.source.clone(),
                    details: json!({ "reason": why }).to_string(),
                })
                .await?;
                Err(CoreError::Unauthenticated(
                    "authentication failed: invalid or unusable access token".into(),
                ))
            }
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one request's parts, passed through"
    )]
    fn check_api_token(
        &self,
        token: &str,
        dpop_scheme: bool,
        proof: Option<&str>,
        cert: Option<&ClientCert>,
        method: &str,
        path: &str,
        now: OffsetDateTime,
    ) -> Result<ApiToken, (String, Option<Uuid>)> {
        let Some(issuer) = self.issuer().map(str::to_owned) else {
            return Err(("no issuer".into(), None));
        };
        let (at, identity) = self
            .active_token(token)
            .map_err(|e| (format!("store: {e}"), None))?
            .ok_or_else(|| {
                (
                    "token invalid, expired, revoked or of an inactive identity".to_owned(),
                    None,
                )
            })?;
        let who = Some(identity.id);
        let mut record = None;
        if !at.aud.iter().any(|a| a.trim_end_matches('/') == issuer) {
            return Err(("token audience is not this server".into(), who));
        }
        match (&at.jkt, dpop_scheme) {
            (Some(jkt), true) => {
                let proof = proof.ok_or_else(|| ("DPoP proof missing".to_owned(), who))?;
                let tokens = &self.policy.tokens;
                let p = verify_dpop(
                    proof,
                    &DpopRequest {
                        method,
                        url: &format!("{issuer}{path}"),
                        now: now.unix_timestamp(),
                        max_age_secs: tokens.dpop_max_age.whole_seconds(),
                        leeway_secs: tokens.clock_leeway.whole_seconds(),
                        access_token: Some(token),
                        nonce: None,
                    },
                )
                .map_err(|e| (format!("dpop: {e}"), who))?;
                if &p.jkt != jkt {
                    return Err((
                        "DPoP proof signed by another key than the token's".into(),
                        who,
                    ));
                }
                let keep = now + tokens.dpop_max_age + tokens.clock_leeway * 2;
                let once = self.once_hash("dpop-api", &p.jkt, &p.jti);
                if !self.proofs_seen.first_use(once, now, keep) {
                    return Err(("DPoP proof replayed".into(), who));
                }
                // Other nodes cannot see this node's memory: with a shared store the proof is
                // also recorded there (kept until its `iat` is out of the accepted window).
                if self.store.shared() {
                    let keep = OffsetDateTime::from_unix_timestamp(p.iat)
                        .map_err(|_| ("DPoP proof iat out of range".to_owned(), who))?
                        + tokens.dpop_max_age
                        + tokens.clock_leeway * 2;
                    record = Some((once, keep));
                }
            }
            (Some(_), false) => {
                return Err(("DPoP-bound token sent as a bearer token".into(), who));
            }
            (None, true) => return Err(("bearer token sent with the DPoP scheme".into(), who)),
            (None, false) => {
                if i_require_binding(&identity) && at.x5t_s256.is_none() {
                    return Err((
                        "this identity's tokens must be sender-constrained".into(),
                        who,
                    ));
                }
            }
        }
        if let Some(x5t) = &at.x5t_s256
            && cert.is_none_or(|c| {
                !warden_crypto::ct_eq(c.x5t_s256.as_bytes(), x5t.as_bytes())
                    || c.not_after.is_some_and(|t| t <= now)
            })
        {
            return Err((
                "certificate-bound token without its certificate on the connection".into(),
                who,
            ));
        }
        Ok((at, identity, record))
    }

    /// Who may learn about a token: its own identity, operators who may read its owner's
    /// inventory, and resource servers — identities granted `warden:introspect`.
    fn may_introspect(&self, caller: &Actor, token_identity: &Identity) -> Result<bool, CoreError> {
        Ok(match &caller.principal {
            Principal::Identity { id, .. } if *id == token_identity.id => true,
            Principal::Identity { id, .. } => self.reader()?.identity(*id)?.is_some_and(|i| {
                i.status == IdentityStatus::Active
                    && i.scopes
                        .iter()
                        .any(|s| scope::covers(s, "warden:introspect"))
            }),
            Principal::Operator { .. } | Principal::System => {
                caller.can_read_team(token_identity.owner_id)
            }
            Principal::Anonymous => false,
        })
    }

    /// RFC 7662 introspection for an authenticated caller.
    pub fn introspect(&self, caller: &Actor, token: &str) -> Result<Introspection, CoreError> {
        if matches!(caller.principal, Principal::Anonymous) {
            return Err(CoreError::Unauthenticated(
                "authenticate to introspect".into(),
            ));
        }
        Ok(match self.active_token(token)? {
            Some((at, identity)) if self.may_introspect(caller, &identity)? => Introspection {
                active: true,
                scope: Some(at.scope.join(" ")),
                client_id: Some(at.client_id),
                token_type: Some(if at.jkt.is_some() { "DPoP" } else { "Bearer" }.into()),
                exp: Some(at.exp),
                iat: Some(at.iat),
                sub: Some(at.sub),
                aud: Some(at.aud),
                iss: Some(at.iss),
                jti: Some(at.jti),
                cnf: match (at.jkt, at.x5t_s256) {
                    (None, None) => None,
                    (jkt, x5t) => {
                        let mut cnf = serde_json::Map::new();
                        if let Some(j) = jkt {
                            cnf.insert("jkt".into(), json!(j));
                        }
                        if let Some(x) = x5t {
                            cnf.insert("x5t#S256".into(), json!(x));
                        }
                        Some(Value::Object(cnf))
                    }
                },
                username: Some(identity.name),
                act: decode(token)
                    .ok()
                    .and_then(|j| j.claims().get("act").cloned()),
            },
            // Inactive, or not the caller's to see: the same answer (RFC 7662 §4).
            _ => Introspection::default(),
        })
    }

    /// RFC 7009 revocation: the token's own client, or an operator who manages its owner, may
    /// revoke it. Invalid or already inactive tokens are accepted silently (§2.2).
    pub async fn revoke_access_token(&self, caller: &Actor, token: &str) -> Result<(), OAuthError> {
        let Some((at, identity)) = self.active_token(token)? else {
            return Ok(());
        };
        let allowed = match &caller.principal {
            Principal::Identity { id, .. } => *id == identity.id,
            Principal::Operator { .. } | Principal::System => {
                caller.can_manage_team(identity.owner_id)
            }
            Principal::Anonymous => false,
        };
        if !allowed {
            return Err(OAuthError::UnauthorizedClient(
                "this token was not issued to you",
            ));
        }
        let exp = OffsetDateTime::from_unix_timestamp(at.exp).unwrap_or_else(|_| self.now());
        let actor = caller.clone();
        // Invalidating: the token's cached check (see `checked_token`) must not outlive this.
        self.write_invalidating(move |tx, job| {
            tx.revoke_token(&at.jti, identity.id, exp)?;
            job.record(
                tx,
                &actor,
                "token.revoked",
                format!("identity:{}", identity.id),
                AuditOutcome::Success,
                json!({ "jti": at.jti }),
            )
        })
        .await?;
        Ok(())
    }

    /// Forgets expired single-use values and revocations. Returns how many rows went.
    pub async fn purge_token_state(&self) -> Result<usize, CoreError> {
        self.write_as_leader(|tx, job| Ok(tx.purge_expired_token_state(job.now())?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(in_cidr(ip("10.1.2.3"), "10.0.0.0/8"));
        assert!(!in_cidr(ip("11.1.2.3"), "10.0.0.0/8"));
        assert!(in_cidr(ip("192.168.1.7"), "192.168.1.7"));
        assert!(!in_cidr(ip("192.168.1.8"), "192.168.1.7/32"));
        assert!(in_cidr(ip("1.2.3.4"), "0.0.0.0/0"));
        assert!(in_cidr(ip("2001:db8::1"), "2001:db8::/32"));
        assert!(!in_cidr(ip("2001:db9::1"), "2001:db8::/32"));
        assert!(!in_cidr(ip("10.0.0.1"), "::/0"), "families never mix");
        assert!(!in_cidr(ip("10.0.0.1"), "not-a-network"));
    }
}
