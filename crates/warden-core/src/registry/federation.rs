//! Federation: a workload or pipeline proves who it is with a token its platform already gives it
//! (GitHub Actions, GitLab CI, Kubernetes, any OIDC issuer an admin trusts) and exchanges it for
//! a short Warden token of the NHI a trust rule names — no secret stored in the CI system.
//!
//! Issuers are configured by admins (keys by URL, fetched and cached, refetched on an unknown
//! `kid` at most every 30 s and at least every 5 minutes; or static keys for air-gapped
//! issuers). A trust rule belongs to the NHI it grants; it is written by an operator who manages
//! that NHI and takes effect only when an admin other than its author approves it (the
//! four-eyes rule of privileged scopes). The exchanged token's lifetime is capped by the rule
//! (default 5 minutes).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_jose::{JwkKey, VerifyingKey, decode};
use warden_types::{
    AddIssuerRequest, AddTrustRuleRequest, AuditOutcome, Identity, IdentityStatus, TrustRule,
    TrustRuleStatus, TrustedIssuer,
};

use super::{Registry, resolve_identity};
use crate::actor::Actor;
use crate::condition::Condition;
use crate::error::CoreError;
use crate::ports::BoxFuture;

/// Default (and largest) lifetime of a token obtained by federation.
pub const DEFAULT_FEDERATED_TTL: u64 = 300;
pub const MAX_FEDERATED_TTL: u64 = 3600;
const JWKS_MIN_REFETCH: Duration = Duration::seconds(30);
const JWKS_MAX_AGE: Duration = Duration::minutes(5);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches documents over HTTP(S) (issuers' JWKS). Implemented outside the domain.
pub trait Fetcher: Send + Sync {
    /// GET `url`: `(status, body)`, the body at most 256 KiB.
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(u16, Vec<u8>), String>>;
}

/// An issuer's keys as last fetched.
#[derive(Clone)]
pub(crate) struct CachedJwks {
    keys: Arc<Vec<JwkKey>>,
    fetched_at: OffsetDateTime,
}

#[derive(Default)]
pub(crate) struct JwksCache(std::sync::Mutex<HashMap<Uuid, CachedJwks>>);

/// A trusted issuer with its active rules, conditions parsed (cached by `iss`).
pub struct IssuerEntry {
    pub(crate) issuer: TrustedIssuer,
    rules: Vec<(TrustRule, Condition)>,
}

/// A verified token of a trusted issuer.
pub(crate) struct External {
    pub(crate) entry: Arc<IssuerEntry>,
    pub(crate) claims: Value,
    pub(crate) subject: String,
    pub(crate) exp: i64,
    pub(crate) once: Option<([u8; 32], OffsetDateTime)>,
}

/// What a verified external token proved.
pub(crate) struct Federated {
    pub(crate) identity: Identity,
    pub(crate) rule: TrustRule,
    pub(crate) issuer: TrustedIssuer,
    pub(crate) subject: String,
    /// Keyed hash of the token's `jti` and how long to keep it, when the issuer is single-use.
    pub(crate) once: Option<([u8; 32], OffsetDateTime)>,
}

fn text(field: &str, v: &str, max: usize) -> Result<(), CoreError> {
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(CoreError::field(field, format!("1 to {max} characters")));
    }
    Ok(())
}

fn url(field: &str, v: &str) -> Result<(), CoreError> {
    text(field, v, 2048)?;
    if !(v.starts_with("https://") || v.starts_with("http://")) || v.contains(char::is_whitespace) {
        return Err(CoreError::field(field, "an http(s) URL"));
    }
    Ok(())
}

fn parse_keys(jwks: &Value) -> Result<Vec<JwkKey>, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWKS is an object with a `keys` array")?;
    // Keys Warden cannot use (other types, private material) are skipped, not fatal: issuers
    // publish several kinds.
    Ok(keys
        .iter()
        .take(100)
        .filter_map(|k| VerifyingKey::from_jwk(k).ok())
        .collect())
}

impl Registry {
    /// Installs the HTTP fetcher for issuers' keys (at start).
    pub fn set_fetcher(&self, fetcher: Arc<dyn Fetcher>) {
        let _ = self.fetcher.set(fetcher);
    }

    /// Trusts an OIDC issuer (admins).
    pub async fn add_issuer(
        &self,
        actor: &Actor,
        req: AddIssuerRequest,
    ) -> Result<TrustedIssuer, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "trusting an issuer needs the admin role".into(),
            ));
        }
        crate::validate::dns_label("name", &req.name)?;
        url("issuer", &req.issuer)?;
        match (&req.jwks_url, &req.static_jwks) {
            (Some(u), None) => url("jwks_url", u)?,
            (None, Some(j)) => {
                if j.to_string().len() > MAX_JWKS_BYTES {
                    return Err(CoreError::field("static_jwks", "at most 256 KiB"));
                }
                if parse_keys(j)
                    .map_err(|e| CoreError::field("static_jwks", e))?
                    .is_empty()
                {
                    return Err(CoreError::field(
                        "static_jwks",
                        "holds no usable public key (RSA, EC P-256, Ed25519)",
                    ));
                }
            }
            _ => {
                return Err(CoreError::field(
                    "jwks_url",
                    "give jwks_url or static_jwks (one of them)",
                ));
            }
        }
        if req.audiences.is_empty() || req.audiences.len() > 10 {
            return Err(CoreError::field("audiences", "1 to 10 audiences"));
        }
        for a in &req.audiences {
            text("audiences", a, 512)?;
        }
        let max_age = req.max_token_age_secs.unwrap_or(600);
        if !(30..=86_400).contains(&max_age) {
            return Err(CoreError::field("max_token_age_secs", "30 to 86400"));
        }
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let issuer = TrustedIssuer {
                id: Uuid::now_v7(),
                name: req.name,
                issuer: req.issuer,
                jwks_url: req.jwks_url,
                static_jwks: req.static_jwks,
                audiences: req.audiences,
                max_token_age_secs: max_age,
                single_use: req.single_use,
                created_by: actor.label(),
                created_at: job.now(),
            };
            if tx.trusted_issuer_named(&issuer.name)?.is_some()
                || tx.trusted_issuer_by_iss(&issuer.issuer)?.is_some()
            {
                return Ok(Err(CoreError::AlreadyExists(format!(
                    "an issuer named {:?} or with iss {:?}",
                    issuer.name, issuer.issuer
                ))));
            }
            tx.put_trusted_issuer(&issuer)?;
            job.record(
                tx,
                &actor,
                "issuer.add",
                format!("issuer:{}", issuer.id),
                AuditOutcome::Success,
                json!({ "name": issuer.name, "issuer": issuer.issuer, "jwks_url": issuer.jwks_url,
                        "audiences": issuer.audiences, "single_use": issuer.single_use }),
            )?;
            Ok(Ok(issuer))
        })
        .await?
    }

    pub fn list_issuers(&self, actor: &Actor) -> Result<Vec<TrustedIssuer>, CoreError> {
        if !matches!(actor.principal, crate::actor::Principal::Operator { .. }) && !actor.is_admin()
        {
            return Err(CoreError::Forbidden(
                "listing issuers needs an operator".into(),
            ));
        }
        Ok(self.reader()?.list_trusted_issuers()?)
    }

    /// Stops trusting an issuer (admins); its rules must be revoked first.
    pub async fn remove_issuer(&self, actor: &Actor, name: &str) -> Result<(), CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "removing an issuer needs the admin role".into(),
            ));
        }
        let (actor, name) = (actor.clone(), name.to_owned());
        let cache = Arc::clone(&self.jwks);
        self.write_invalidating(move |tx, job| {
            let Some(i) = tx.trusted_issuer_named(&name)? else {
                return Ok(Err(CoreError::NotFound(format!("issuer {name:?}"))));
            };
            let live = tx
                .trust_rules(Some(i.id), None)?
                .into_iter()
                .filter(|r| {
                    matches!(
                        r.status,
                        TrustRuleStatus::Active | TrustRuleStatus::PendingApproval
                    )
                })
                .count();
            if live > 0 {
                return Ok(Err(CoreError::InvalidState(format!(
                    "{live} trust rule(s) still use issuer {name:?}; revoke them first"
                ))));
            }
            tx.delete_trusted_issuer(i.id)?;
            job.record(
                tx,
                &actor,
                "issuer.remove",
                format!("issuer:{}", i.id),
                AuditOutcome::Success,
                json!({ "name": name }),
            )?;
            let id = i.id;
            tx.after_commit(Box::new(move || {
                if let Ok(mut c) = cache.0.lock() {
                    c.remove(&id);
                }
            }));
            Ok(Ok(()))
        })
        .await?
    }

    /// Writes a trust rule for an NHI the actor manages; it waits for an admin other than its
    /// author.
    pub async fn add_trust_rule(
        &self,
        actor: &Actor,
        req: AddTrustRuleRequest,
    ) -> Result<TrustRule, CoreError> {
        Condition::parse(&req.condition)?;
        let ttl = req.max_ttl_secs.unwrap_or(DEFAULT_FEDERATED_TTL);
        if !(30..=MAX_FEDERATED_TTL).contains(&ttl) {
            return Err(CoreError::field(
                "max_ttl_secs",
                format!("30 to {MAX_FEDERATED_TTL}"),
            ));
        }
        let Some(requester) = actor.operator_id() else {
            return Err(CoreError::Forbidden(
                "trust rules are written by operators".into(),
            ));
        };
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let identity = match resolve_identity(tx, &actor, &req.identity) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            };
            let target = format!("identity:{}", identity.id);
            if !actor.can_manage_team(identity.owner_id) {
                let e = CoreError::Forbidden(format!(
                    "you may not add trust rules to identities of team {:?}",
                    identity.owner
                ));
                return Ok(Err(job.deny(tx, &actor, "trust_rule.add", target, e)?));
            }
            if identity.status == IdentityStatus::Retired {
                return Ok(Err(CoreError::InvalidState(
                    "the identity is retired".into(),
                )));
            }
            let Some(issuer) = tx.trusted_issuer_named(&req.issuer)? else {
                return Ok(Err(CoreError::NotFound(format!("issuer {:?}", req.issuer))));
            };
            let rule = TrustRule {
                id: Uuid::now_v7(),
                identity_id: identity.id,
                issuer_id: issuer.id,
                condition: req.condition,
                max_ttl_secs: ttl,
                status: TrustRuleStatus::PendingApproval,
                created_by: actor.label(),
                requester_id: Some(requester),
                created_at: job.now(),
                decided_by: None,
                decided_at: None,
            };
            tx.put_trust_rule(&rule)?;
            job.record(
                tx,
                &actor,
                "trust_rule.add",
                target,
                AuditOutcome::Success,
                json!({ "rule": rule.id.to_string(), "issuer": issuer.name,
                        "condition": rule.condition, "max_ttl_secs": ttl }),
            )?;
            Ok(Ok(rule))
        })
        .await?
    }

    /// Approves or denies a pending trust rule: an admin who is not its author.
    pub async fn decide_trust_rule(
        &self,
        actor: &Actor,
        id: Uuid,
        approve: bool,
        reason: String,
    ) -> Result<TrustRule, CoreError> {
        let reason = crate::validate::reason("reason", Some(&reason), true)?;
        let actor = actor.clone();
        let action = if approve {
            "trust_rule.approve"
        } else {
            "trust_rule.deny"
        };
        self.write_invalidating(move |tx, job| {
            let Some(mut rule) = tx.trust_rule(id)? else {
                return Ok(Err(CoreError::NotFound(format!("trust rule {id}"))));
            };
            let target = format!("trust_rule:{id}");
            if actor.operator_id().is_some() && actor.operator_id() == rule.requester_id {
                let e = CoreError::SelfApproval(
                    "four-eyes rule: the author of a trust rule cannot decide it".into(),
                );
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            if !actor.is_admin() || actor.operator_id().is_none() {
                let e = CoreError::Forbidden("deciding a trust rule needs an admin".into());
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            if rule.status != TrustRuleStatus::PendingApproval {
                return Ok(Err(CoreError::InvalidState(format!(
                    "the trust rule is {}",
                    rule.status
                ))));
            }
            rule.status = if approve {
                TrustRuleStatus::Active
            } else {
                TrustRuleStatus::Denied
            };
            rule.decided_by = Some(actor.label());
            rule.decided_at = Some(job.now());
            tx.put_trust_rule(&rule)?;
            job.record(
                tx,
                &actor,
                action,
                target,
                AuditOutcome::Success,
                json!({ "identity": rule.identity_id.to_string(), "reason": reason }),
            )?;
            Ok(Ok(rule))
        })
        .await?
    }

    /// Revokes a trust rule (operators managing its NHI): no token is exchanged through it again.
    pub async fn revoke_trust_rule(&self, actor: &Actor, id: Uuid) -> Result<TrustRule, CoreError> {
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let Some(mut rule) = tx.trust_rule(id)? else {
                return Ok(Err(CoreError::NotFound(format!("trust rule {id}"))));
            };
            let target = format!("trust_rule:{id}");
            let team = tx.identity(rule.identity_id)?.map(|i| i.owner_id);
            if !team.is_some_and(|t| actor.can_manage_team(t)) {
                let e = CoreError::Forbidden("you may not revoke this trust rule".into());
                return Ok(Err(job.deny(tx, &actor, "trust_rule.revoke", target, e)?));
            }
            rule.status = TrustRuleStatus::Revoked;
            rule.decided_by = Some(actor.label());
            rule.decided_at = Some(job.now());
            tx.put_trust_rule(&rule)?;
            job.record(
                tx,
                &actor,
                "trust_rule.revoke",
                target,
                AuditOutcome::Success,
                json!({}),
            )?;
            Ok(Ok(rule))
        })
        .await?
    }

    /// Trust rules the actor may see (of one identity, or all it can read).
    pub fn list_trust_rules(
        &self,
        actor: &Actor,
        identity: Option<&str>,
    ) -> Result<Vec<TrustRule>, CoreError> {
        let store = self.reader()?;
        let id = match identity {
            Some(r) => Some(resolve_identity(&*store, actor, r)?.id),
            None => None,
        };
        let mut out = Vec::new();
        for r in store.trust_rules(None, id)? {
            if store
                .identity(r.identity_id)?
                .is_some_and(|i| actor.can_read_team(i.owner_id))
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The issuer's keys, from the cache or fetched (`refresh`: the cached ones lack a `kid`).
    async fn issuer_keys(
        &self,
        issuer: &TrustedIssuer,
        refresh: bool,
        now: OffsetDateTime,
    ) -> Result<Arc<Vec<JwkKey>>, String> {
        if let Some(j) = &issuer.static_jwks {
            return parse_keys(j).map(Arc::new);
        }
        let cached = self
            .jwks
            .0
            .lock()
            .ok()
            .and_then(|c| c.get(&issuer.id).cloned());
        if let Some(c) = &cached {
            let age = now - c.fetched_at;
            if age < JWKS_MAX_AGE && (!refresh || age < JWKS_MIN_REFETCH) {
                return Ok(Arc::clone(&c.keys));
            }
        }
        let url = issuer
            .jwks_url
            .as_deref()
            .ok_or("the issuer has no jwks_url")?;
        let fetcher = self.fetcher.get().ok_or("no HTTP fetcher configured")?;
        let fetched = match fetcher.get(url).await {
            Ok((200, body)) if body.len() <= MAX_JWKS_BYTES => {
                serde_json::from_slice::<Value>(&body)
                    .map_err(|_| "the JWKS is not JSON".to_owned())
                    .and_then(|v| parse_keys(&v))
            }
            Ok((200, _)) => Err("the JWKS is larger than 256 KiB".into()),
            Ok((status, _)) => Err(format!("fetching the JWKS answered {status}")),
            Err(e) => Err(e),
        };
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                if let Ok(mut c) = self.jwks.0.lock() {
                    c.insert(
                        issuer.id,
                        CachedJwks {
                            keys: Arc::clone(&keys),
                            fetched_at: now,
                        },
                    );
                }
                Ok(keys)
            }
            // An issuer that cannot be reached keeps its last keys until they are 5 minutes
            // old; after that, fail closed.
            Err(e) => match cached {
                Some(c) if now - c.fetched_at < JWKS_MAX_AGE => Ok(c.keys),
                _ => Err(e),
            },
        }
    }

    /// Verifies an external token and finds the one NHI an active trust rule maps it to.
    /// `Err` carries the precise reason (for the audit event only).
    pub(crate) async fn federate(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Federated, String> {
        let ext = self.verify_external(token, now).await?;
        let store = self.reader().map_err(|e| e.to_string())?;
        let entry = &ext.entry;
        let claims = &ext.claims;
        // Rules of this issuer that match; exactly one NHI.
        let mut found: Option<(Identity, TrustRule)> = None;
        for (rule, cond) in &entry.rules {
            if !cond.matches(claims) {
                continue;
            }
            let Some(identity) = store
                .identity(rule.identity_id)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            match &found {
                Some((i, _)) if i.id != identity.id => {
                    return Err("the token matches trust rules of several identities".into());
                }
                Some(_) => {}
                None => found = Some((identity, rule.clone())),
            }
        }
        let (identity, rule) = found.ok_or("no active trust rule matches the token's claims")?;
        if identity.status != IdentityStatus::Active {
            return Err(format!(
                "identity {:?} is {}",
                identity.name, identity.status
            ));
        }
        if identity.expires_at.is_some_and(|e| e <= now) {
            return Err(format!("identity {:?} has expired", identity.name));
        }
        Ok(Federated {
            identity,
            rule,
            issuer: ext.entry.issuer.clone(),
            subject: ext.subject,
            once: ext.once,
        })
    }

    /// Verifies a token of a trusted issuer: known `iss`, a published key, signature, times,
    /// audience. `Err` carries the precise reason.
    pub(crate) async fn verify_external(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<External, String> {
        let jws = decode(token).map_err(|e| format!("subject token: {e}"))?;
        let iss = jws
            .str_claim("iss")
            .map_err(|_| "subject token has no iss".to_owned())?
            .to_owned();
        let store = self.reader().map_err(|e| e.to_string())?;
        let entry = match self.federation.get(&iss) {
            Some(e) => e,
            None => {
                let generation = self.federation.generation();
                let issuer = store
                    .trusted_issuer_by_iss(&iss)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!(
                            "issuer {:?} is not trusted",
                            iss.chars().take(200).collect::<String>()
                        )
                    })?;
                let rules = store
                    .trust_rules(Some(issuer.id), None)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|r| r.status == TrustRuleStatus::Active)
                    .filter_map(|r| Condition::parse(&r.condition).ok().map(|c| (r, c)))
                    .collect();
                let entry = Arc::new(IssuerEntry { issuer, rules });
                self.federation
                    .put(iss.clone(), generation, Arc::clone(&entry));
                entry
            }
        };
        let issuer = entry.issuer.clone();
        let kid = jws.header.kid.clone();
        let pick = |keys: &[JwkKey]| -> Option<JwkKey> {
            keys.iter()
                .find(|k| kid.is_some() && k.kid == kid)
                .or_else(|| {
                    if kid.is_none() && keys.len() == 1 {
                        keys.first()
                    } else {
                        None
                    }
                })
                .cloned()
        };
        let mut key = pick(&self.issuer_keys(&issuer, false, now).await?);
        if key.is_none() {
            key = pick(&self.issuer_keys(&issuer, true, now).await?);
        }
        let key = key.ok_or_else(|| format!("kid {kid:?} is not in the issuer's JWKS"))?;
        key.verify(&jws)
            .map_err(|e| format!("subject token signature: {e}"))?;
        let t = now.unix_timestamp();
        let leeway = 60;
        let exp = jws
            .date_claim("exp")
            .ok()
            .flatten()
            .ok_or("subject token has no exp")?;
        if exp + leeway <= t {
            return Err("subject token expired".into());
        }
        if let Some(nbf) = jws.date_claim("nbf").ok().flatten()
            && nbf - leeway > t
        {
            return Err("subject token not yet valid".into());
        }
        let iat = jws
            .date_claim("iat")
            .ok()
            .flatten()
            .ok_or("subject token has no iat")?;
        if iat - leeway > t || t - iat > i64::try_from(issuer.max_token_age_secs).unwrap_or(0) {
            return Err("subject token is too old (or from the future)".into());
        }
        let auds = jws
            .audiences()
            .map_err(|_| "subject token aud is malformed".to_owned())?;
        if !auds.iter().any(|a| issuer.audiences.iter().any(|x| x == a)) {
            return Err("subject token is for another audience".into());
        }
        let subject = jws
            .opt_str_claim("sub")
            .ok()
            .flatten()
            .unwrap_or("")
            .chars()
            .take(256)
            .collect::<String>();
        let claims = Value::Object(jws.claims().clone());
        let once = if issuer.single_use {
            let jti = jws
                .str_claim("jti")
                .map_err(|_| "single-use issuer: the subject token has no jti".to_owned())?;
            Some((
                self.once_hash("federation", &iss, jti),
                OffsetDateTime::from_unix_timestamp(exp).unwrap_or(now) + Duration::minutes(2),
            ))
        } else {
            None
        };
        Ok(External {
            entry,
            claims,
            subject,
            exp,
            once,
        })
    }
}
