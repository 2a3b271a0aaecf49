//! Verifies Warden access tokens where they are used: at a resource server, without a call to
//! Warden per request.
//!
//! A [`Verifier`] holds the issuer's published keys (fetched from its JWKS URL, cached, refetched
//! when a token names a key it does not know — at most once per [`MIN_REFETCH`] — or given
//! statically for air-gapped use). [`Verifier::verify`] checks, in order: the `Authorization`
//! scheme, the token's signature under a published key, `typ: at+jwt`, issuer, expiry, the
//! required audience and scopes, and the sender constraint: a DPoP-bound token (`cnf.jkt`) needs
//! the `DPoP` scheme and a proof for this request, signed by that key, carrying `ath`, not seen
//! before; a certificate-bound token (`cnf.x5t#S256`) needs the same client certificate on the
//! connection. A bound token is never accepted as a bearer token.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_jose::{
    AccessToken, AccessTokenRules, DpopRequest, JoseError, VerifyingKey, check_access_token,
    decode, sha256_b64, verify_dpop,
};

/// Shortest time between two JWKS fetches triggered by unknown key ids.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Longest a fetched JWKS is trusted before it is fetched again, even when every token names a
/// known key: a key the issuer withdrew (say, after a leak) stops verifying within this time.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(300);
/// DPoP proofs older than this are refused.
pub const DPOP_MAX_AGE_SECS: i64 = 60;
/// Most DPoP proof ids remembered for replay detection.
pub const MAX_REMEMBERED_PROOFS: usize = 1_000_000;

/// Why a request's token was refused. The `WWW-Authenticate` error code is [`VerifyError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no usable Authorization header")]
    NoToken,
    #[error("token: {0}")]
    Token(JoseError),
    #[error("the token's key is not published by the issuer")]
    UnknownKey,
    #[error("the token lacks scope {0:?}")]
    Scope(String),
    #[error("the token's identity is not in environment {0:?}")]
    Environment(String),
    #[error("a DPoP-bound token needs the DPoP scheme and a proof")]
    DpopRequired,
    #[error("a bearer token was sent with the DPoP scheme")]
    NotDpopBound,
    #[error("DPoP proof: {0}")]
    DpopProof(JoseError),
    #[error("the DPoP proof is signed by another key than the token's")]
    DpopKeyMismatch,
    #[error("the DPoP proof was used before")]
    DpopReplay,
    #[error("a certificate-bound token needs the same client certificate")]
    CertificateMismatch,
    #[error("fetching the issuer's keys: {0}")]
    Jwks(String),
}

impl VerifyError {
    /// The RFC 6750 / RFC 9449 error code for `WWW-Authenticate`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Scope(_) => "insufficient_scope",
            VerifyError::DpopProof(_) | VerifyError::DpopReplay => "invalid_dpop_proof",
            VerifyError::NoToken => "invalid_request",
            _ => "invalid_token",
        }
    }
}

/// What a resource server requires of a request.
#[derive(Debug, Clone, Copy)]
pub struct Requirements<'a> {
    /// The audience (resource indicator) the token must carry.
    pub audience: &'a str,
    /// Scopes the token must carry, each exactly.
    pub scopes: &'a [&'a str],
    /// The environment the token's identity must be in (Warden's `env` claim), if any: a
    /// production service can refuse a staging identity's token even when audiences overlap.
    pub environment: Option<&'a str>,
}

/// What arrived with a request.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The `Authorization` header value (`DPoP <token>` or `Bearer <token>`).
    pub authorization: &'a str,
    /// The `DPoP` header value, if any.
    pub dpop: Option<&'a str>,
    /// The request's method and full URL (as clients address it).
    pub method: &'a str,
    pub url: &'a str,
    /// The client certificate of the connection (DER), under mTLS.
    pub client_certificate: Option<&'a [u8]>,
}

/// Verifies tokens of one issuer.
pub struct Verifier {
    issuer: String,
    jwks_url: Option<String>,
    /// Present when keys are fetched.
    http: Option<reqwest::Client>,
    keys: RwLock<HashMap<String, VerifyingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    seen_proofs: Mutex<HashMap<String, i64>>,
    leeway_secs: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

fn parse_jwks(jwks: &Value) -> HashMap<String, VerifyingKey> {
    jwks["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| {
                    let kid = k["kid"].as_str()?.to_owned();
                    VerifyingKey::from_jwk(k).ok().map(|v| (kid, v.key))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Verifier {
    /// Keys fetched from `jwks_url` (by default `<issuer>/oauth2/jwks`) when first needed.
    /// Installs rustls' `ring` provider as the process default if none is set (HTTPS needs one).
    pub fn new(issuer: &str, jwks_url: Option<&str>) -> Result<Verifier, VerifyError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let issuer = issuer.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| VerifyError::Jwks(e.to_string()))?;
        Ok(Verifier {
            jwks_url: Some(jwks_url.map_or_else(|| format!("{issuer}/oauth2/jwks"), str::to_owned)),
            issuer,
            http: Some(http),
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            seen_proofs: Mutex::new(HashMap::new()),
            leeway_secs: 5,
        })
    }

    /// Keys given once, never fetched (air-gapped resource servers, tests).
    pub fn with_jwks(issuer: &str, jwks: &Value) -> Verifier {
        Verifier {
            issuer: issuer.trim_end_matches('/').to_owned(),
            jwks_url: None,
            http: None,
            keys: RwLock::new(parse_jwks(jwks)),
            last_fetch: Mutex::new(None),
            seen_proofs: Mutex::new(HashMap::new()),
            leeway_secs: 5,
        }
    }

    /// Fetches the JWKS now (also done on demand).
    pub async fn refresh(&self) -> Result<(), VerifyError> {
        let (Some(url), Some(http)) = (&self.jwks_url, &self.http) else {
            return Ok(());
        };
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(Instant::now());
        }
        let jwks: Value = http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| VerifyError::Jwks(e.to_string()))?
            .json()
            .await
            .map_err(|e| VerifyError::Jwks(e.to_string()))?;
        let keys = parse_jwks(&jwks);
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(())
    }

    fn kid_known(&self, kid: &str) -> bool {
        self.keys.read().is_ok_and(|k| k.contains_key(kid))
    }

    /// Verifies a request's token; fetches the issuer's keys first if the token names an unknown
    /// one (rate-limited).
    pub async fn verify(
        &self,
        presented: &Presented<'_>,
        required: &Requirements<'_>,
    ) -> Result<AccessToken, VerifyError> {
        let stale = self.jwks_url.is_some()
            && self
                .last_fetch
                .lock()
                .map(|l| l.is_none_or(|t| t.elapsed() >= MAX_KEY_AGE))
                .unwrap_or(true);
        if stale {
            self.refresh().await?;
        } else if let Some(kid) = token_of(presented.authorization)
            .ok()
            .and_then(|(_, t)| decode(t).ok())
            .and_then(|j| j.header.kid)
            && !self.kid_known(&kid)
        {
            let due = self
                .last_fetch
                .lock()
                .map(|l| l.is_none_or(|t| t.elapsed() >= MIN_REFETCH))
                .unwrap_or(true);
            if due {
                self.refresh().await?;
            }
        }
        self.verify_now(presented, required, unix_now())
    }

    /// Signature and claims only (issuer, expiry, audience, scopes), *not* the sender binding:
    /// for diagnostics such as `warden token verify` without a proof. Never use it to admit a
    /// request.
    pub fn verify_claims_only(
        &self,
        token: &str,
        required: &Requirements<'_>,
        now: i64,
    ) -> Result<AccessToken, VerifyError> {
        let (_, at) = self.signed_claims(token, required, now)?;
        Ok(at)
    }

    fn signed_claims<'t>(
        &self,
        token: &'t str,
        required: &Requirements<'_>,
        now: i64,
    ) -> Result<(&'t str, AccessToken), VerifyError> {
        let jws = decode(token).map_err(VerifyError::Token)?;
        let kid = jws.header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        {
            let keys = self.keys.read().map_err(|_| VerifyError::UnknownKey)?;
            let key = keys.get(kid).ok_or(VerifyError::UnknownKey)?;
            jws.verify(key).map_err(VerifyError::Token)?;
        }
        let at = check_access_token(
            &jws,
            &AccessTokenRules {
                issuer: &self.issuer,
                audience: Some(required.audience),
                now,
                leeway_secs: self.leeway_secs,
            },
        )
        .map_err(VerifyError::Token)?;
        for s in required.scopes {
            if !at.scope.iter().any(|have| have == s) {
                return Err(VerifyError::Scope((*s).to_owned()));
            }
        }
        if let Some(env) = required.environment
            && at.env.as_deref() != Some(env)
        {
            return Err(VerifyError::Environment(env.to_owned()));
        }
        Ok((token, at))
    }

    /// The whole check with the keys at hand and an explicit `now` (no I/O).
    pub fn verify_now(
        &self,
        presented: &Presented<'_>,
        required: &Requirements<'_>,
        now: i64,
    ) -> Result<AccessToken, VerifyError> {
        let (dpop_scheme, token) = token_of(presented.authorization)?;
        let (token, at) = self.signed_claims(token, required, now)?;
        match (&at.jkt, dpop_scheme) {
            (Some(jkt), true) => {
                let proof = presented.dpop.ok_or(VerifyError::DpopRequired)?;
                let p = verify_dpop(
                    proof,
                    &DpopRequest {
                        method: presented.method,
                        url: presented.url,
                        now,
                        max_age_secs: DPOP_MAX_AGE_SECS,
                        leeway_secs: self.leeway_secs,
                        access_token: Some(token),
                        nonce: None,
                    },
                )
                .map_err(VerifyError::DpopProof)?;
                if &p.jkt != jkt {
                    return Err(VerifyError::DpopKeyMismatch);
                }
                self.remember_proof(&format!("{}:{}", p.jkt, p.jti), p.iat, now)?;
            }
            (Some(_), false) => return Err(VerifyError::DpopRequired),
            (None, true) => return Err(VerifyError::NotDpopBound),
            (None, false) => {}
        }
        if let Some(x5t) = &at.x5t_s256 {
            let cert = presented
                .client_certificate
                .ok_or(VerifyError::CertificateMismatch)?;
            if &sha256_b64(cert) != x5t {
                return Err(VerifyError::CertificateMismatch);
            }
        }
        Ok(at)
    }

    /// Remembers a proof (keyed by its key and `jti`) until it could no longer be accepted:
    /// `iat + max age + leeway`.
    fn remember_proof(&self, key: &str, iat: i64, now: i64) -> Result<(), VerifyError> {
        let mut seen = self
            .seen_proofs
            .lock()
            .map_err(|_| VerifyError::DpopReplay)?;
        if seen.len() >= MAX_REMEMBERED_PROOFS {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= MAX_REMEMBERED_PROOFS {
                // Fail closed rather than forget proofs that could still be replayed.
                return Err(VerifyError::DpopReplay);
            }
        }
        let until = iat + DPOP_MAX_AGE_SECS + self.leeway_secs;
        if seen.get(key).is_some_and(|u| *u >= now) {
            return Err(VerifyError::DpopReplay);
        }
        seen.insert(key.to_owned(), until);
        Ok(())
    }
}

/// `(is the DPoP scheme, the token)` from an `Authorization` value.
fn token_of(authorization: &str) -> Result<(bool, &str), VerifyError> {
    let (scheme, token) = authorization
        .trim()
        .split_once(' ')
        .ok_or(VerifyError::NoToken)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(VerifyError::NoToken);
    }
    if scheme.eq_ignore_ascii_case("dpop") {
        Ok((true, token))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok((false, token))
    } else {
        Err(VerifyError::NoToken)
    }
}

#[cfg(test)]
mod tests;
