//! Rotation: a new value reaches its target, is checked, and only then becomes current; the
//! replaced value stays valid for the overlap, then is retired.
//!
//! For targets outside Warden (PostgreSQL, webhooks) the new value is first committed as a
//! *pending* version, then the target is changed, then checked, then the pending version is made
//! current in a second transaction. A crash between the two leaves a pending version: the jobs
//! leader *settles* it — it asks the target which value works (a login, the check URL) and
//! finishes or fails the rotation accordingly — so Warden always knows which value is live. A
//! failed check rolls the target back where it can and raises a finding.
//!
//! With two PostgreSQL accounts, the account not in use gets the new password and becomes current;
//! the other keeps its password through the overlap, so clients never see a failed login.

use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_types::{
    AuditOutcome, CredentialKind, Finding, FindingKind, FindingStatus, RotationOutcome,
    RotationPolicy, Rotator, Secret, SecretVersionState,
};
use zeroize::Zeroizing;

use super::vault::{
    append_version, check_path, may_use, open_value, prune_versions, secret_target, secs,
};
use super::{Job, Registry, resolve_identity};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::ports::{PgLogin, WebhookCall, WriteTx};

/// A pending version older than this is settled by the jobs leader (no rotation step takes as
/// long: every target call has a shorter deadline).
pub const SETTLE_AFTER: Duration = Duration::seconds(120);
/// A pending version the target could not be asked about is asked again this much later.
const SETTLE_RETRY: Duration = Duration::minutes(1);
/// After a failed scheduled rotation, the next attempt waits this long.
const RETRY_AFTER: Duration = Duration::minutes(10);

fn pending_of(secret: &Secret) -> Option<&warden_types::SecretVersion> {
    secret
        .versions
        .iter()
        .find(|v| v.state == SecretVersionState::Pending)
}

/// Makes `version` current; the version it replaces stays valid until `now + overlap`.
fn make_current(secret: &mut Secret, version: u32, now: OffsetDateTime, policy: &RotationPolicy) {
    let overlap = secs(policy.overlap_secs);
    for v in secret.versions.iter_mut() {
        if v.version == version {
            v.state = SecretVersionState::Current;
            v.retire_at = None;
        } else if v.state == SecretVersionState::Current {
            v.state = SecretVersionState::Previous;
            v.retire_at = Some(now + overlap);
        }
    }
    secret.current_version = version;
    secret.next_rotation_at = super::vault::next_rotation(policy, now);
    secret.updated_at = now;
}

/// Records a failed rotation as a finding (deduplicated per secret, reopened if resolved).
fn raise_finding(
    tx: &mut dyn WriteTx,
    job: &Job,
    secret: &Secret,
    reason: &str,
) -> Result<(), CoreError> {
    let now = job.now();
    // Stable per secret, so repeated failures update one finding.
    let fingerprint = warden_crypto::sha256_b64url(format!("rotation|{}", secret.path).as_bytes())
        .bytes()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let preview: String = reason.chars().take(500).collect();
    if let Some(mut f) = tx.finding_by_fingerprint(&fingerprint)? {
        f.preview = preview;
        f.last_seen = now;
        f.times_seen += 1;
        if f.status == FindingStatus::Resolved {
            f.status = FindingStatus::Open;
            f.status_reason = Some("the rotation failed again".into());
        }
        tx.update_finding(&f)?;
        return Ok(());
    }
    let owner = tx.identity(secret.owner_id)?;
    let f = Finding {
        id: Uuid::now_v7(),
        fingerprint,
        kind: FindingKind::RotationFailed,
        rule: "vault.rotation_failed".into(),
        severity: "high".into(),
        repository: None,
        path: secret.path.clone(),
        line: 0,
        commit: None,
        author: None,
        email: None,
        preview,
        suggested_owner: owner.as_ref().map(|i| i.owner.clone()),
        identity_id: owner.as_ref().map(|i| i.id),
        identity: owner.as_ref().map(|i| i.name.clone()),
        owner: owner.as_ref().map(|i| i.owner.clone()),
        credential_id: None,
        action: Some("rolled_back".into()),
        status: FindingStatus::Open,
        status_reason: None,
        reported_by: "system".into(),
        first_seen: now,
        last_seen: now,
        times_seen: 1,
        evidence: None,
        proposal: None,
    };
    tx.insert_finding(&f)?;
    Ok(())
}

/// Which account gets the new password: the one not behind the current version (two
/// accounts), or the only one.
fn next_account(secret: &Secret, accounts: &[String]) -> String {
    let current = secret
        .version(secret.current_version)
        .and_then(|v| v.account.clone());
    match (accounts, current) {
        ([a, b], Some(c)) if *a == c => b.clone(),
        ([a, ..], _) => a.clone(),
        ([], _) => String::new(),
    }
}

impl Registry {
    /// Rotates the secret at `path` now, by its rotation policy.
    pub async fn rotate_secret(
        &self,
        actor: &Actor,
        path: &str,
    ) -> Result<RotationOutcome, CoreError> {
        check_path(path)?;
        let (a, p) = (actor.clone(), path.to_owned());
        self.write(move |tx, job| {
            let Some(s) = tx.secret(&p)?.filter(|s| s.deleted_at.is_none()) else {
                return Ok(Err(CoreError::NotFound(format!("secret {p:?}"))));
            };
            if !may_use(tx, &a, &s, "write")? {
                let e = CoreError::Forbidden(format!("you may not rotate the secret {p:?}"));
                return Ok(Err(job.deny(
                    tx,
                    &a,
                    "secret.rotate",
                    secret_target(&p),
                    e,
                )?));
            }
            Ok(Ok(()))
        })
        .await??;
        self.rotate_now(actor, path).await
    }

    async fn rotate_now(&self, actor: &Actor, path: &str) -> Result<RotationOutcome, CoreError> {
        // One rotation per secret on this node at a time; the maintenance job's settling skips
        // what runs here (other nodes are kept out by the pending version and SETTLE_AFTER).
        let _running = InFlight::enter(&self.rotating, path)?;
        let secret = self
            .reader()?
            .secret(path)?
            .filter(|s| s.deleted_at.is_none())
            .ok_or_else(|| CoreError::NotFound(format!("secret {path:?}")))?;
        let policy = secret.rotation.clone().ok_or_else(|| {
            CoreError::InvalidState(format!("secret {path:?} has no rotation policy"))
        })?;
        if pending_of(&secret).is_some() {
            return Err(CoreError::InvalidState(
                "a rotation of this secret is in progress".into(),
            ));
        }
        let out = match &policy.rotator {
            Rotator::Random { length } => {
                let value =
                    warden_crypto::random_text(*length as usize, warden_crypto::ALPHANUMERIC);
                self.rotate_in_place(actor, path, &policy, value, None)
                    .await?
            }
            Rotator::WardenCredential { identity } => {
                self.rotate_warden_credential(actor, &secret, &policy, identity)
                    .await?
            }
            Rotator::Postgres {
                database,
                accounts,
                check_sql,
            } => {
                let account = next_account(&secret, accounts);
                if accounts.len() == 2
                    && let Some(v) = secret.versions.iter().find(|v| {
                        v.state == SecretVersionState::Previous
                            && v.account.as_ref() == Some(&account)
                    })
                {
                    // Clients may still log in as that account until its overlap ends.
                    return Err(CoreError::InvalidState(format!(
                        "account {account} is still in its overlap (until {}); rotate after it ends",
                        v.retire_at.map(|t| t.to_string()).unwrap_or_default()
                    )));
                }
                let (_, conn, admin) = self.database_login(database)?;
                let value = warden_crypto::random_text(32, warden_crypto::ALPHANUMERIC);
                let version = self
                    .begin_rotation(actor, path, &value, Some(account.clone()))
                    .await?;
                let login = PgLogin {
                    host: conn.host.clone(),
                    port: conn.port,
                    dbname: conn.dbname.clone(),
                    username: account.clone(),
                    password: Zeroizing::new(value.to_string()),
                    tls: crate::ports::PgTls::of(&conn),
                };
                let targets = Arc::clone(&self.vault_parts()?.targets);
                let set = Zeroizing::new(format!(
                    "ALTER ROLE \"{account}\" WITH PASSWORD '{}'",
                    warden_crypto::scram_sha256_verifier(&value)
                ));
                let result = match targets.pg_execute(&admin, vec![set]).await {
                    Err(e) => Err(format!("changing the password failed: {e}")),
                    Ok(()) => targets
                        .pg_check(&login, check_sql.as_deref().unwrap_or("SELECT 1"))
                        .await
                        .map_err(|e| format!("health check failed: {e}")),
                };
                match result {
                    Ok(()) => self.finish_rotation(actor, path, version, &policy).await?,
                    Err(reason) => {
                        // One account: put its current password back (two: the account was not
                        // in use, nothing to undo).
                        if accounts.len() == 1
                            && let Ok(old) = self.current_value(path)
                        {
                            let undo = Zeroizing::new(format!(
                                "ALTER ROLE \"{account}\" WITH PASSWORD '{}'",
                                warden_crypto::scram_sha256_verifier(&old)
                            ));
                            if let Err(e) = targets.pg_execute(&admin, vec![undo]).await {
                                // The database may hold either password now: the version stays
                                // pending, and settling asks the database which one works.
                                tracing::error!(secret = %path, error = %e, "rolling back a failed rotation failed; it will be settled");
                                return Err(CoreError::InvalidState(format!(
                                    "{reason}; rolling back failed too ({e}); Warden settles it by asking the database"
                                )));
                            }
                        }
                        self.fail_rotation(actor, path, version, &reason).await?
                    }
                }
            }
            Rotator::Webhook { url, check_url } => {
                let value = warden_crypto::random_text(40, warden_crypto::ALPHANUMERIC);
                let version = self.begin_rotation(actor, path, &value, None).await?;
                let targets = Arc::clone(&self.vault_parts()?.targets);
                let body = json!({ "action": "rotate", "path": path, "version": version, "value": &*value });
                let result = match targets.webhook(self.signed_call(url, &body)?).await {
                    Ok((status, answer)) if (200..300).contains(&status) => {
                        // The endpoint may answer with the value it generated itself.
                        let theirs = serde_json::from_slice::<serde_json::Value>(&answer)
                            .ok()
                            .and_then(|v| {
                                v.get("value").and_then(|x| x.as_str()).map(str::to_owned)
                            })
                            .map(Zeroizing::new);
                        let live = match theirs {
                            Some(v)
                                if !v.is_empty() && v.len() <= super::vault::MAX_SECRET_BYTES =>
                            {
                                self.replace_pending(path, version, &v).await?;
                                v
                            }
                            _ => Zeroizing::new(value.to_string()),
                        };
                        match check_url {
                            None => Ok(()),
                            Some(c) => {
                                let body = json!({ "action": "check", "path": path, "version": version, "value": &*live });
                                match targets.webhook(self.signed_call(c, &body)?).await {
                                    Ok((s, _)) if (200..300).contains(&s) => Ok(()),
                                    Ok((s, _)) => Err(format!("health check answered {s}")),
                                    Err(e) => Err(format!("health check failed: {e}")),
                                }
                            }
                        }
                    }
                    Ok((status, _)) => Err(format!("the rotation endpoint answered {status}")),
                    Err(e) => Err(format!("calling the rotation endpoint failed: {e}")),
                };
                match result {
                    Ok(()) => self.finish_rotation(actor, path, version, &policy).await?,
                    Err(reason) => {
                        // Tell the endpoint to go back to the current value (best effort).
                        let body =
                            json!({ "action": "rollback", "path": path, "version": version });
                        if let Ok(call) = self.signed_call(url, &body) {
                            let _ = targets.webhook(call).await;
                        }
                        self.fail_rotation(actor, path, version, &reason).await?
                    }
                }
            }
        };
        if out.result == "rotated" {
            self.notify_dependents(path, out.version, &policy.notify)
                .await;
        }
        Ok(out)
    }

    /// The current value of a secret (for Warden's own use: rollbacks).
    fn current_value(&self, path: &str) -> Result<Zeroizing<String>, CoreError> {
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let store = self.reader()?;
        let s = store
            .secret(path)?
            .ok_or_else(|| CoreError::NotFound(format!("secret {path:?}")))?;
        let sealed = store
            .secret_envelope(path, s.current_version)?
            .ok_or_else(|| CoreError::NotFound(format!("the value of {path:?}")))?;
        self.value_of(&*keys, path, s.current_version, &sealed)
    }

    fn value_of(
        &self,
        keys: &dyn warden_crypto::envelope::KeyWrapper,
        path: &str,
        version: u32,
        sealed: &crate::ports::Envelope,
    ) -> Result<Zeroizing<String>, CoreError> {
        let bytes = open_value(keys, path, version, sealed)?;
        Ok(Zeroizing::new(
            std::str::from_utf8(&bytes)
                .map_err(|_| CoreError::InvalidState("a secret value is not UTF-8".into()))?
                .to_owned(),
        ))
    }

    /// A rotation with nothing to change outside Warden: the new value becomes current at once.
    async fn rotate_in_place(
        &self,
        actor: &Actor,
        path: &str,
        policy: &RotationPolicy,
        value: Zeroizing<String>,
        account: Option<String>,
    ) -> Result<RotationOutcome, CoreError> {
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let (a, p, policy) = (actor.clone(), path.to_owned(), policy.clone());
        self.write(move |tx, job| {
            let Some(mut s) = tx.secret(&p)? else {
                return Ok(Err(CoreError::NotFound(format!("secret {p:?}"))));
            };
            let now = job.now();
            let v = append_version(
                tx,
                &*keys,
                &mut s,
                value.as_bytes(),
                SecretVersionState::Pending,
                a.label(),
                account,
                now,
            )?;
            make_current(&mut s, v, now, &policy);
            if policy.overlap_secs == 0 {
                retire_previous_now(&mut s);
            }
            prune_versions(tx, &mut s)?;
            tx.put_secret(&s)?;
            job.record(
                tx,
                &a,
                "secret.rotate",
                secret_target(&p),
                AuditOutcome::Success,
                json!({ "version": v }),
            )?;
            Ok(Ok(RotationOutcome {
                path: p,
                result: "rotated".into(),
                version: v,
                reason: None,
            }))
        })
        .await?
    }

    /// Rotates the Warden API key kept in a secret: a new credential is issued and stored as the
    /// new version in one transaction; the old credential expires when the overlap ends.
    async fn rotate_warden_credential(
        &self,
        actor: &Actor,
        secret: &Secret,
        policy: &RotationPolicy,
        identity_ref: &str,
    ) -> Result<RotationOutcome, CoreError> {
        let old_hash = match self.current_value(&secret.path) {
            Ok(v) => Some(self.secret_hasher.hash(v.as_bytes())),
            Err(_) => None,
        };
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let value = warden_crypto::token::generate(warden_crypto::TokenKind::ApiKey);
        let new_hash = self.secret_hasher.hash(value.expose().as_bytes());
        let hint = value.hint();
        let expected = secret.current_version;
        let (a, p, policy, iref) = (
            actor.clone(),
            secret.path.clone(),
            policy.clone(),
            identity_ref.to_owned(),
        );
        self.write_invalidating(move |tx, job| {
            let now = job.now();
            let system = Actor::system("vault");
            let identity = match resolve_identity(tx, &system, &iref) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            };
            if identity.status != warden_types::IdentityStatus::Active {
                return Ok(Err(CoreError::InvalidState(format!("identity {:?} is {}", identity.name, identity.status))));
            }
            let Some(mut s) = tx.secret(&p)? else {
                return Ok(Err(CoreError::NotFound(format!("secret {p:?}"))));
            };
            if s.current_version != expected {
                return Ok(Err(CoreError::InvalidState(
                    "the secret changed while it was being rotated; try again".into(),
                )));
            }
            let expires_at = crate::lifecycle::credential_expiry(&job.policy, CredentialKind::ApiKey, now, None, identity.expires_at)?;
            let new = warden_types::Credential {
                id: Uuid::now_v7(),
                identity_id: identity.id,
                kind: CredentialKind::ApiKey,
                hint: hint.clone(),
                description: Some(format!("rotated by the vault for {p}")),
                thumbprint: None,
                public_jwk: None,
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
                revoke_reason: None,
                rotated_from: None,
                replaced_by: None,
                created_by: a.label(),
            };
            let mut new = new;
            if let Some(h) = old_hash
                && let Some(mut old) = tx.credential_by_secret_hash(&h)?
                && old.identity_id == identity.id
                && old.revoked_at.is_none()
            {
                if old.replaced_by.is_some() {
                    return Ok(Err(CoreError::InvalidState(
                        "the stored key was already rotated".into(),
                    )));
                }
                new.rotated_from = Some(old.id);
                old.replaced_by = Some(new.id);
                old.expires_at = crate::lifecycle::overlap_expiry(now, old.expires_at, secs(policy.overlap_secs));
                tx.update_credential(&old)?;
            }
            tx.insert_credential(&new, Some(&new_hash))?;
            job.record(tx, &a, "credential.issue", format!("credential:{}", new.id), AuditOutcome::Success,
                json!({ "identity": identity.id.to_string(), "kind": "api_key", "rotated_from": new.rotated_from.map(|x| x.to_string()), "hint": hint, "vault": p }))?;
            let v = append_version(tx, &*keys, &mut s, value.expose().as_bytes(), SecretVersionState::Pending, a.label(), None, now)?;
            make_current(&mut s, v, now, &policy);
            // The credential's own overlap ends it; the version needs no retirement work.
            retire_previous_now(&mut s);
            prune_versions(tx, &mut s)?;
            tx.put_secret(&s)?;
            job.record(tx, &a, "secret.rotate", secret_target(&p), AuditOutcome::Success, json!({ "version": v, "credential": new.id.to_string() }))?;
            Ok(Ok(RotationOutcome { path: p, result: "rotated".into(), version: v, reason: None }))
        })
        .await?
    }

    /// Commits the new value as a pending version before the target is touched.
    async fn begin_rotation(
        &self,
        actor: &Actor,
        path: &str,
        value: &str,
        account: Option<String>,
    ) -> Result<u32, CoreError> {
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let (a, p) = (actor.clone(), path.to_owned());
        let value = Zeroizing::new(value.to_owned());
        self.write(move |tx, job| {
            let Some(mut s) = tx.secret(&p)? else {
                return Ok(Err(CoreError::NotFound(format!("secret {p:?}"))));
            };
            if pending_of(&s).is_some() {
                return Ok(Err(CoreError::InvalidState(
                    "a rotation of this secret is in progress".into(),
                )));
            }
            let now = job.now();
            let v = append_version(
                tx,
                &*keys,
                &mut s,
                value.as_bytes(),
                SecretVersionState::Pending,
                a.label(),
                account.clone(),
                now,
            )?;
            tx.put_secret(&s)?;
            job.record(
                tx,
                &a,
                "secret.rotation_started",
                secret_target(&p),
                AuditOutcome::Success,
                json!({ "version": v, "account": account }),
            )?;
            Ok(Ok(v))
        })
        .await?
    }

    /// Replaces a pending version's value (a webhook answered with its own).
    async fn replace_pending(
        &self,
        path: &str,
        version: u32,
        value: &str,
    ) -> Result<(), CoreError> {
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let p = path.to_owned();
        let value = Zeroizing::new(value.to_owned());
        self.write(move |tx, _job| {
            let sealed = warden_crypto::envelope::seal(
                &*keys,
                &super::vault::aad(&p, version),
                value.as_bytes(),
            )
            .map_err(|e| CoreError::InvalidState(format!("sealing: {e}")))?;
            tx.put_secret_envelope(&p, version, Some(&sealed))?;
            if let Some(mut s) = tx.secret(&p)?
                && let Some(v) = s.version_mut(version)
            {
                v.key_id = sealed.key_id.clone();
                tx.put_secret(&s)?;
            }
            Ok(())
        })
        .await
    }

    /// The pending version becomes current.
    async fn finish_rotation(
        &self,
        actor: &Actor,
        path: &str,
        version: u32,
        policy: &RotationPolicy,
    ) -> Result<RotationOutcome, CoreError> {
        let (a, p, policy) = (actor.clone(), path.to_owned(), policy.clone());
        self.write(move |tx, job| {
            let Some(mut s) = tx.secret(&p)? else {
                return Ok(Err(CoreError::NotFound(format!("secret {p:?}"))));
            };
            if s.version(version).map(|v| v.state) != Some(SecretVersionState::Pending) {
                return Ok(Err(CoreError::InvalidState(format!(
                    "version {version} is no longer pending"
                ))));
            }
            make_current(&mut s, version, job.now(), &policy);
            s.retry_at = None;
            prune_versions(tx, &mut s)?;
            tx.put_secret(&s)?;
            job.record(
                tx,
                &a,
                "secret.rotate",
                secret_target(&p),
                AuditOutcome::Success,
                json!({ "version": version, "overlap_secs": policy.overlap_secs }),
            )?;
            Ok(Ok(RotationOutcome {
                path: p,
                result: "rotated".into(),
                version,
                reason: None,
            }))
        })
        .await?
    }

    /// The pending version failed: it is marked so, the current one stays, a finding is raised.
    async fn fail_rotation(
        &self,
        actor: &Actor,
        path: &str,
        version: u32,
        reason: &str,
    ) -> Result<RotationOutcome, CoreError> {
        let (a, p, reason) = (actor.clone(), path.to_owned(), reason.to_owned());
        self.write(move |tx, job| {
            let Some(mut s) = tx.secret(&p)? else {
                return Err(CoreError::NotFound(format!("secret {p:?}")));
            };
            let now = job.now();
            match s.version_mut(version) {
                Some(v) if v.state == SecretVersionState::Pending => {
                    v.state = SecretVersionState::Failed;
                }
                // Settled meanwhile: what was decided stands.
                _ => {
                    return Err(CoreError::InvalidState(format!(
                        "version {version} is no longer pending"
                    )));
                }
            }
            s.retry_at = None;
            if s.next_rotation_at.is_some_and(|t| t <= now) {
                s.next_rotation_at = Some(now + RETRY_AFTER);
            }
            s.updated_at = now;
            tx.put_secret(&s)?;
            raise_finding(tx, job, &s, &reason)?;
            job.record(
                tx,
                &a,
                "secret.rotate",
                secret_target(&p),
                AuditOutcome::Failure,
                json!({ "version": version, "reason": reason, "rolled_back": true }),
            )?;
            Ok(RotationOutcome {
                path: p,
                result: "rolled_back".into(),
                version,
                reason: Some(reason),
            })
        })
        .await
    }

    /// A signed call: the body's digest in a JWS (`typ: warden-webhook+jwt`) signed with the token
    /// service's current key, so the receiver verifies it with `/oauth2/jwks`.
    pub fn signed_call(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<WebhookCall, CoreError> {
        let bytes = Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| CoreError::InvalidState(e.to_string()))?,
        );
        let ring = self.keyring();
        let signer = ring
            .signer
            .clone()
            .ok_or_else(|| CoreError::InvalidState("no signing key".into()))?;
        let iat = self.now().unix_timestamp();
        let claims = json!({
            "iss": self.issuer().unwrap_or("warden"),
            "aud": url,
            "iat": iat,
            "exp": iat + 300,
            "jti": Uuid::now_v7().to_string(),
            "body_sha256": warden_crypto::sha256_b64url(&bytes),
        });
        let signature = signer
            .sign("warden-webhook+jwt", &claims)
            .map_err(|e| CoreError::InvalidState(e.to_string()))?;
        Ok(WebhookCall {
            url: url.to_owned(),
            body: bytes,
            signature,
        })
    }

    /// Tells dependents a secret rotated (no value in the message). Two attempts each; failures
    /// are logged and audited, never fatal.
    async fn notify_dependents(&self, path: &str, version: u32, urls: &[String]) {
        let Ok(parts) = self.vault_parts() else {
            return;
        };
        let targets = Arc::clone(&parts.targets);
        for url in urls {
            let body = json!({ "event": "secret.rotated", "path": path, "version": version });
            let mut outcome = Err("not sent".to_owned());
            for _ in 0..2 {
                outcome = match self.signed_call(url, &body) {
                    Err(e) => Err(e.to_string()),
                    Ok(call) => match targets.webhook(call).await {
                        Ok((s, _)) if (200..300).contains(&s) => Ok(()),
                        Ok((s, _)) => Err(format!("answered {s}")),
                        Err(e) => Err(e),
                    },
                };
                if outcome.is_ok() {
                    break;
                }
            }
            let (p, u) = (path.to_owned(), url.clone());
            let err = outcome.err();
            if let Some(e) = &err {
                tracing::warn!(secret = %path, url = %url, error = %e, "notifying a dependent failed");
            }
            let _ = self
                .write(move |tx, job| {
                    job.record(
                        tx,
                        &Actor::system("vault"),
                        "secret.notify",
                        secret_target(&p),
                        if err.is_some() {
                            AuditOutcome::Failure
                        } else {
                            AuditOutcome::Success
                        },
                        json!({ "url": u, "version": version, "error": err }),
                    )
                })
                .await;
        }
    }

    /// The vault's periodic work (the jobs leader): settles rotations a crash interrupted, ends
    /// overlaps, runs scheduled rotations. Returns how many secrets it acted on.
    pub async fn vault_maintenance(&self) -> Result<usize, CoreError> {
        if self.vault.get().is_none() {
            return Ok(0);
        }
        let now = self.now();
        let due = self.reader()?.secrets_due(now, 50)?;
        let system = Actor::system("vault");
        let mut n = 0;
        for s in due {
            if let Some(p) = pending_of(&s) {
                // Settle once no rotation can still be running: it began before this process
                // did (and no other node shares the store), or longer ago than any rotation takes.
                let started = self.vault_parts().map(|v| v.started_at).unwrap_or(now);
                let orphaned = p.created_at < started && !self.store.shared();
                let here = self
                    .rotating
                    .lock()
                    .map(|r| r.contains(&s.path))
                    .unwrap_or(true);
                if !here && (orphaned || now - p.created_at >= SETTLE_AFTER) {
                    if let Err(e) = self.settle(&s, p.version).await {
                        tracing::warn!(secret = %s.path, error = %e, "settling an interrupted rotation failed");
                    }
                    n += 1;
                }
                continue;
            }
            let ending: Vec<u32> = s
                .versions
                .iter()
                .filter(|v| {
                    v.state == SecretVersionState::Previous && v.retire_at.is_some_and(|t| t <= now)
                })
                .map(|v| v.version)
                .collect();
            for v in ending {
                if let Err(e) = self.retire_version(&s, v).await {
                    tracing::warn!(secret = %s.path, version = v, error = %e, "ending a rotation overlap failed");
                }
                n += 1;
            }
            if s.deleted_at.is_none() && s.next_rotation_at.is_some_and(|t| t <= now) {
                match self.rotate_now(&system, &s.path).await {
                    Ok(o) if o.result == "rotated" => {
                        tracing::info!(secret = %s.path, version = o.version, "secret rotated")
                    }
                    Ok(o) => {
                        tracing::warn!(secret = %s.path, reason = ?o.reason, "scheduled rotation rolled back")
                    }
                    Err(e) => {
                        tracing::warn!(secret = %s.path, error = %e, "scheduled rotation failed");
                        let p = s.path.clone();
                        let _ = self
                            .write(move |tx, job| {
                                if let Some(mut x) = tx.secret(&p)? {
                                    x.next_rotation_at = Some(job.now() + RETRY_AFTER);
                                    tx.put_secret(&x)?;
                                }
                                Ok(())
                            })
                            .await;
                    }
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// Decides an interrupted rotation by asking the target which value works.
    async fn settle(&self, secret: &Secret, version: u32) -> Result<RotationOutcome, CoreError> {
        let _running = InFlight::enter(&self.rotating, &secret.path)?;
        let system = Actor::system("vault");
        let policy = secret
            .rotation
            .clone()
            .ok_or_else(|| CoreError::InvalidState("no rotation policy".into()))?;
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let targets = Arc::clone(&self.vault_parts()?.targets);
        let sealed = self
            .reader()?
            .secret_envelope(&secret.path, version)?
            .ok_or_else(|| CoreError::NotFound("the pending value".into()))?;
        let pending = self.value_of(&*keys, &secret.path, version, &sealed)?;
        // Ok: the pending value works. Err((true, _)): it does not (an answer). Err((false, _)):
        // the target could not be asked; decide nothing and ask again later.
        let live: Result<(), (bool, String)> = match &policy.rotator {
            Rotator::Postgres {
                database,
                check_sql,
                ..
            } => {
                let (_, conn, _) = self.database_login(database)?;
                let account = secret
                    .version(version)
                    .and_then(|v| v.account.clone())
                    .unwrap_or_default();
                let login = PgLogin {
                    tls: crate::ports::PgTls::of(&conn),
                    host: conn.host,
                    port: conn.port,
                    dbname: conn.dbname,
                    username: account,
                    password: Zeroizing::new(pending.to_string()),
                };
                targets
                    .pg_check(&login, check_sql.as_deref().unwrap_or("SELECT 1"))
                    .await
                    .map_err(|e| {
                        // A refused login is an answer; unreachable or slow is not.
                        let refused = e.contains("(28P01)") || e.contains("(28000)");
                        (refused, e)
                    })
            }
            Rotator::Webhook {
                check_url: Some(c), ..
            } => {
                let body = json!({ "action": "check", "path": secret.path, "version": version, "value": &*pending });
                match targets.webhook(self.signed_call(c, &body)?).await {
                    Ok((s, _)) if (200..300).contains(&s) => Ok(()),
                    Ok((s, _)) => Err((true, format!("check answered {s}"))),
                    Err(e) => Err((false, e)),
                }
            }
            _ => Err((
                true,
                "the target cannot be asked which value is live".to_owned(),
            )),
        };
        match live {
            Ok(()) => {
                self.finish_rotation(&system, &secret.path, version, &policy)
                    .await
            }
            Err((true, e)) => {
                self.fail_rotation(
                    &system,
                    &secret.path,
                    version,
                    &format!(
                        "interrupted rotation: the new value does not work ({e}); the previous one stays current"
                    ),
                )
                .await
            }
            Err((false, e)) => {
                let p = secret.path.clone();
                self.write(move |tx, job| {
                    if let Some(mut x) = tx.secret(&p)? {
                        x.retry_at = Some(job.now() + SETTLE_RETRY);
                        tx.put_secret(&x)?;
                    }
                    Ok(())
                })
                .await?;
                Err(CoreError::InvalidState(format!(
                    "could not ask the target about the pending value ({e}); trying again later"
                )))
            }
        }
    }

    /// Ends a replaced version's overlap: a PostgreSQL account not in use loses its password; a
    /// webhook target is told; the version is retired.
    async fn retire_version(&self, secret: &Secret, version: u32) -> Result<(), CoreError> {
        let targets = Arc::clone(&self.vault_parts()?.targets);
        // Act on the secret as it is now, not as it was when the sweep listed it.
        let fresh = self.reader()?.secret(&secret.path)?;
        let Some(secret) = fresh.as_ref().filter(|s| {
            s.version(version).map(|v| v.state) == Some(SecretVersionState::Previous)
                && s.versions
                    .iter()
                    .all(|v| v.state != SecretVersionState::Pending)
        }) else {
            return Ok(());
        };
        if let Some(policy) = &secret.rotation {
            match &policy.rotator {
                Rotator::Postgres { database, .. } => {
                    let account = secret.version(version).and_then(|v| v.account.clone());
                    let current = secret
                        .version(secret.current_version)
                        .and_then(|v| v.account.clone());
                    if let Some(acct) = account
                        && Some(&acct) != current.as_ref()
                    {
                        let (_, _, admin) = self.database_login(database)?;
                        let stmt =
                            Zeroizing::new(format!("ALTER ROLE \"{acct}\" WITH PASSWORD NULL"));
                        targets.pg_execute(&admin, vec![stmt]).await.map_err(|e| {
                            CoreError::InvalidState(format!("disabling {acct}: {e}"))
                        })?;
                    }
                }
                Rotator::Webhook { url, .. } => {
                    let body =
                        json!({ "action": "retire", "path": secret.path, "version": version });
                    if let Err(e) = targets.webhook(self.signed_call(url, &body)?).await {
                        tracing::warn!(secret = %secret.path, error = %e, "telling the endpoint to retire a version failed");
                    }
                }
                _ => {}
            }
        }
        let p = secret.path.clone();
        self.write(move |tx, job| {
            let Some(mut s) = tx.secret(&p)? else {
                return Ok(());
            };
            if let Some(v) = s.version_mut(version)
                && v.state == SecretVersionState::Previous
            {
                v.state = SecretVersionState::Retired;
                v.retire_at = None;
                tx.put_secret(&s)?;
                job.record(
                    tx,
                    &Actor::system("vault"),
                    "secret.retire_version",
                    secret_target(&p),
                    AuditOutcome::Success,
                    json!({ "version": version }),
                )?;
            }
            Ok(())
        })
        .await
    }
}

/// Every `previous` version is retired at once (no overlap, or nothing to do at the target).
fn retire_previous_now(s: &mut Secret) {
    for v in s.versions.iter_mut() {
        if v.state == SecretVersionState::Previous {
            v.state = SecretVersionState::Retired;
            v.retire_at = None;
        }
    }
}

/// Marks a secret as being rotated on this node until dropped.
pub(crate) struct InFlight<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    path: String,
}

impl<'a> InFlight<'a> {
    pub(crate) fn enter(
        set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
        path: &str,
    ) -> Result<InFlight<'a>, CoreError> {
        let mut s = set
            .lock()
            .map_err(|_| CoreError::InvalidState("rotation bookkeeping poisoned".into()))?;
        if !s.insert(path.to_owned()) {
            return Err(CoreError::InvalidState(
                "a rotation of this secret is in progress".into(),
            ));
        }
        Ok(InFlight {
            set,
            path: path.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.path);
        }
    }
}
