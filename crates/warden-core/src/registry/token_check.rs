//! Checking Warden's own access tokens when they come back (exchange, introspection, revocation,
//! the decision point), with the check cached under the authentication generation.

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_jose::{AccessTokenRules, check_access_token, decode};
use warden_types::{Identity, IdentityStatus};

use super::Registry;
use crate::error::CoreError;

/// An access token issued here that was active when checked (see [`Registry::checked_token`]).
#[derive(Debug)]
pub(crate) struct CheckedToken {
    /// The signing key's id: the answer holds only while it is published.
    pub(crate) kid: String,
    pub(crate) at: warden_jose::AccessToken,
    /// The token's identity (for a delegated token: its agent).
    pub(crate) identity: Identity,
    pub(crate) claims: serde_json::Map<String, Value>,
    /// The delegations of a delegated token's chain, oldest first.
    pub(crate) chain: Vec<warden_types::Delegation>,
    /// When time alone ends the answer (the earliest expiry of everything it rests on).
    pub(crate) valid_until: OffsetDateTime,
}

/// Most verified tokens cached (each some 2 KB).
pub(crate) const CHECKED_TOKENS: usize = 20_000;

impl Registry {
    /// Verifies an access token issued here: signature under a published key, claims, not
    /// revoked, its identity still active. `None` when inactive, for whatever reason.
    pub(crate) fn active_token(
        &self,
        token: &str,
    ) -> Result<Option<(warden_jose::AccessToken, Identity)>, CoreError> {
        Ok(self
            .checked_token(token)?
            .map(|t| (t.at.clone(), t.identity.clone())))
    }

    /// [`Registry::active_token`] with the token's claims and the delegations of its chain.
    ///
    /// Answers are cached by the token's SHA-256 under the authentication generation (see
    /// [`super::cache`]): every change that can make a token inactive (revoking it, its
    /// credential or a delegation of its chain; suspending or retiring any identity of it)
    /// bumps the generation after its commit, so a cached answer never outlives one. What
    /// time alone ends (the token's, its credential's, an identity's or a delegation's expiry)
    /// is checked on every use, and the signing key must still be published.
    pub(crate) fn checked_token(
        &self,
        token: &str,
    ) -> Result<Option<Arc<CheckedToken>>, CoreError> {
        if token.len() > warden_jose::MAX_JWS_LEN {
            return Ok(None);
        }
        let now = self.now();
        let digest = warden_crypto::sha256(token.as_bytes());
        if let Some(hit) = self.checked_tokens.get(&digest) {
            let key_published = self.keyring().verifiers.contains_key(&hit.kid);
            if key_published && now.unix_timestamp() < hit.at.exp && now < hit.valid_until {
                return Ok(Some(hit));
            }
            return Ok(None);
        }
        let generation = self.checked_tokens.generation();
        let Some(issuer) = self.issuer() else {
            return Ok(None);
        };
        let Ok(jws) = decode(token) else {
            return Ok(None);
        };
        let ring = self.keyring();
        let Some((kid, key)) = jws
            .header
            .kid
            .as_deref()
            .and_then(|k| ring.verifiers.get_key_value(k))
        else {
            return Ok(None);
        };
        if jws.verify(key).is_err() {
            return Ok(None);
        }
        let Ok(at) = check_access_token(
            &jws,
            &AccessTokenRules {
                issuer,
                audience: None,
                now: now.unix_timestamp(),
                leeway_secs: 0,
            },
        ) else {
            return Ok(None);
        };
        // One read transaction for every check: a consistent view, and one lock.
        let store = self.snapshot()?;
        if store.token_revoked(&at.jti)? {
            return Ok(None);
        }
        let mut valid_until = OffsetDateTime::from_unix_timestamp(at.exp).unwrap_or(now);
        // Obtained with a credential that has since been revoked (or expired): inactive.
        if let Some(cid) = jws
            .opt_str_claim("cid")
            .ok()
            .flatten()
            .and_then(|c| Uuid::parse_str(c).ok())
        {
            match store.credential(cid)? {
                Some(c) if c.revoked_at.is_none() && c.expires_at > now => {
                    valid_until = valid_until.min(c.expires_at);
                }
                _ => return Ok(None),
            }
        }
        // A delegated token acts as its agent (`client_id`); its `sub` is whoever lent the
        // authority. Every delegation of its chain must still stand, every actor be active.
        let act = jws.claims().get("act");
        let holder = if act.is_some() {
            &at.client_id
        } else {
            &at.sub
        };
        let Some(identity) = Uuid::parse_str(holder)
            .ok()
            .map(|id| store.identity(id))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let usable = |i: &Identity| {
            i.status == IdentityStatus::Active && i.expires_at.is_none_or(|e| e > now)
        };
        if !usable(&identity) {
            return Ok(None);
        }
        if let Some(e) = identity.expires_at {
            valid_until = valid_until.min(e);
        }
        let mut chain = Vec::new();
        if let Some(act) = act {
            let Some(ids) = super::delegation::chain_ids(jws.claims()) else {
                return Ok(None);
            };
            for id in ids {
                match store.delegation(id)? {
                    Some(d) if d.revoked_at.is_none() && d.expires_at > now => {
                        valid_until = valid_until.min(d.expires_at);
                        chain.push(d);
                    }
                    _ => return Ok(None),
                }
            }
            for actor in super::delegation::actors(act) {
                match store.identity(actor)? {
                    Some(i) if usable(&i) => {
                        if let Some(e) = i.expires_at {
                            valid_until = valid_until.min(e);
                        }
                    }
                    _ => return Ok(None),
                }
            }
        }
        let checked = Arc::new(CheckedToken {
            kid: kid.clone(),
            at,
            identity,
            claims: jws.claims().clone(),
            chain,
            valid_until,
        });
        self.checked_tokens
            .put(digest, generation, Arc::clone(&checked));
        Ok(Some(checked))
    }
}
