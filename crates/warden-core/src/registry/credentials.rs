//! Credentials: issue, list, rotate, revoke, and the end of rotation overlaps.

use serde_json::json;
use std::sync::Arc;
use time::Duration;
use uuid::Uuid;
use warden_crypto::jwk::check_public_jwk;
use warden_crypto::token::{self, TokenKind};
use warden_types::{
    AuditOutcome, Credential, CredentialKind, IdentityStatus, IssueCredentialRequest,
    IssuedCredential, RotateCredentialRequest,
};

use super::{Registry, identity_target, resolve_identity};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::lifecycle::{credential_expiry, overlap_expiry};
use crate::validate;

/// What a new credential's secret part is.
enum Material {
    Secret {
        value: warden_crypto::SecretString,
        hash: [u8; 32],
    },
    PublicKey {
        jwk: serde_json::Value,
        thumbprint: String,
    },
}

impl Registry {
    fn material(
        &self,
        kind: CredentialKind,
        jwk: Option<&serde_json::Value>,
    ) -> Result<Material, CoreError> {
        let secret = |tk: TokenKind| {
            let value = token::generate(tk);
            let hash = self.secret_hasher.hash(value.expose().as_bytes());
            Material::Secret { value, hash }
        };
        match (kind, jwk) {
            (CredentialKind::PublicKey, Some(jwk)) => {
                let k =
                    check_public_jwk(jwk).map_err(|e| CoreError::field("jwk", e.to_string()))?;
                Ok(Material::PublicKey {
                    jwk: k.public,
                    thumbprint: k.thumbprint,
                })
            }
            (CredentialKind::PublicKey, None) => Err(CoreError::field(
                "jwk",
                "required for a public_key credential: the public JWK to register",
            )),
            (_, Some(_)) => Err(CoreError::field(
                "jwk",
                "only a public_key credential takes a jwk",
            )),
            (CredentialKind::ApiKey, None) => Ok(secret(TokenKind::ApiKey)),
            (CredentialKind::ClientSecret, None) => Ok(secret(TokenKind::ClientSecret)),
        }
    }

    /// Issues (or, for public keys, registers) a credential. A secret is returned once.
    pub async fn issue_credential(
        &self,
        actor: &Actor,
        reference: &str,
        req: IssueCredentialRequest,
    ) -> Result<IssuedCredential, CoreError> {
        let description = validate::description(req.description.as_deref())?;
        let material = self.material(req.kind, req.jwk.as_ref())?;
        let (actor, reference) = (actor.clone(), reference.to_owned());
        // A new public key changes which assertions a client can sign: the cached client keys
        // must be dropped. (New secrets are looked up by their own hash; nothing cached to drop.)
        let clients = Arc::clone(&self.clients);
        let is_key = req.kind == CredentialKind::PublicKey;
        self.write(move |tx, job| {
            if is_key {
                tx.after_commit(Box::new(move || clients.invalidate()));
                tx.notify_peers(crate::ports::Topic::Authentication);
            }
            let identity = resolve_identity(tx, &actor, &reference)?;
            let target = identity_target(identity.id);
            if !actor.can_manage_team(identity.owner_id)
                && !actor.acts_on_self(identity.id, "warden:credentials")
            {
                let e = CoreError::Forbidden(format!(
                    "you may not issue credentials for identities of team {:?}",
                    identity.owner
                ));
                return Ok(Err(job.deny(tx, &actor, "credential.issue", target, e)?));
            }
            if identity.status != IdentityStatus::Active {
                return Ok(Err(CoreError::InvalidState(format!(
                    "identity {:?} is {}; credentials are issued only to active identities",
                    identity.name, identity.status
                ))));
            }
            let now = job.now();
            if identity.expires_at.is_some_and(|e| e <= now) {
                return Ok(Err(CoreError::InvalidState(format!(
                    "identity {:?} has expired",
                    identity.name
                ))));
            }
            let expires_at = credential_expiry(&job.policy, req.kind, now, req.ttl_seconds, identity.expires_at)?;
            let (hint, thumbprint, public_jwk, secret, hash) = match material {
                Material::Secret { value, hash } => (value.hint(), None, None, Some(value), Some(hash)),
                Material::PublicKey { jwk, thumbprint } => {
                    (format!("jkt:{}", thumbprint), Some(thumbprint), Some(jwk), None, None)
                }
            };
            let credential = Credential {
                id: Uuid::now_v7(),
                identity_id: identity.id,
                kind: req.kind,
                hint,
                description,
                thumbprint,
                public_jwk,
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
                revoke_reason: None,
                rotated_from: None,
                replaced_by: None,
                created_by: actor.label(),
            };
            tx.insert_credential(&credential, hash.as_ref().map(|h| h.as_slice()))?;
            job.record(
                tx,
                &actor,
                "credential.issue",
                format!("credential:{}", credential.id),
                AuditOutcome::Success,
                json!({ "identity": identity.id.to_string(), "kind": credential.kind, "expires_at": credential.expires_at.unix_timestamp(), "hint": credential.hint }),
            )?;
            Ok(Ok(IssuedCredential {
                credential,
                secret: secret.map(|s| s.expose().to_owned()),
            }))
        })
        .await?
    }

    pub fn list_credentials(
        &self,
        actor: &Actor,
        reference: &str,
    ) -> Result<Vec<warden_types::Credential>, CoreError> {
        let store = self.reader()?;
        let identity = resolve_identity(&*store, actor, reference)?;
        Ok(store.credentials_of(identity.id)?)
    }

    pub fn credential(&self, actor: &Actor, id: Uuid) -> Result<Credential, CoreError> {
        let store = self.reader()?;
        let c = store
            .credential(id)?
            .ok_or_else(|| CoreError::NotFound(format!("credential {id}")))?;
        resolve_identity(&*store, actor, &c.identity_id.to_string())
            .map_err(|_| CoreError::NotFound(format!("credential {id}")))?;
        Ok(c)
    }

    /// Issues a successor of the same kind and keeps the old credential valid for the overlap.
    pub async fn rotate_credential(
        &self,
        actor: &Actor,
        id: Uuid,
        req: RotateCredentialRequest,
    ) -> Result<IssuedCredential, CoreError> {
        let overlap = match req.overlap_seconds {
            None => self.policy.default_rotation_overlap,
            Some(s) => Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)),
        };
        let kind = self
            .reader()?
            .credential(id)?
            .map(|c| c.kind)
            .ok_or_else(|| CoreError::NotFound(format!("credential {id}")))?;
        if kind == CredentialKind::PublicKey {
            return Err(CoreError::InvalidState(
                "a public key is rotated by registering the new key and revoking the old one"
                    .into(),
            ));
        }
        let max = self.policy.max_ttl(kind);
        let overlap = match req.overlap_seconds {
            Some(_) if overlap > max => {
                return Err(CoreError::field(
                    "overlap_seconds",
                    "longer than the kind's maximum ttl",
                ));
            }
            _ => std::cmp::min(overlap, max),
        };
        let material = self.material(kind, None)?;
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let mut old = tx
                .credential(id)?
                .ok_or_else(|| CoreError::NotFound(format!("credential {id}")))?;
            let identity = resolve_identity(tx, &actor, &old.identity_id.to_string())
                .map_err(|_| CoreError::NotFound(format!("credential {id}")))?;
            let target = format!("credential:{id}");
            if !actor.can_manage_team(identity.owner_id)
                && !actor.acts_on_self(identity.id, "warden:credentials")
            {
                let e = CoreError::Forbidden(format!("you may not rotate credentials of team {:?}", identity.owner));
                return Ok(Err(job.deny(tx, &actor, "credential.rotate", target, e)?));
            }
            let now = job.now();
            if old.revoked_at.is_some() || old.expires_at <= now {
                return Ok(Err(CoreError::InvalidState("the credential is revoked or expired; issue a new one".into())));
            }
            if old.replaced_by.is_some() {
                return Ok(Err(CoreError::InvalidState("the credential was already rotated".into())));
            }
            if identity.status != IdentityStatus::Active {
                return Ok(Err(CoreError::InvalidState(format!("identity {:?} is {}", identity.name, identity.status))));
            }
            if identity.expires_at.is_some_and(|e| e <= now) {
                return Ok(Err(CoreError::InvalidState(format!(
                    "identity {:?} has expired",
                    identity.name
                ))));
            }
            let expires_at = credential_expiry(&job.policy, kind, now, req.ttl_seconds, identity.expires_at)?;
            let Material::Secret { value, hash } = material else {
                return Err(CoreError::InvalidState("only secrets rotate".into()));
            };
            let new = Credential {
                id: Uuid::now_v7(),
                identity_id: identity.id,
                kind,
                hint: value.hint(),
                description: old.description.clone(),
                thumbprint: None,
                public_jwk: None,
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
                revoke_reason: None,
                rotated_from: Some(old.id),
                replaced_by: None,
                created_by: actor.label(),
            };
            tx.insert_credential(&new, Some(&hash))?;
            old.replaced_by = Some(new.id);
            old.expires_at = overlap_expiry(now, old.expires_at, overlap);
            tx.update_credential(&old)?;
            job.record(
                tx,
                &actor,
                "credential.rotate",
                target,
                AuditOutcome::Success,
                json!({ "identity": identity.id.to_string(), "replaced_by": new.id.to_string(), "old_valid_until": old.expires_at.unix_timestamp() }),
            )?;
            job.record(
                tx,
                &actor,
                "credential.issue",
                format!("credential:{}", new.id),
                AuditOutcome::Success,
                json!({ "identity": identity.id.to_string(), "kind": kind, "rotated_from": old.id.to_string(), "hint": new.hint }),
            )?;
            Ok(Ok(IssuedCredential { credential: new, secret: Some(value.expose().to_owned()) }))
        })
        .await?
    }

    pub async fn revoke_credential(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Credential, CoreError> {
        let reason = validate::reason("reason", reason.as_deref(), false)?;
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let mut c = tx
                .credential(id)?
                .ok_or_else(|| CoreError::NotFound(format!("credential {id}")))?;
            let identity = resolve_identity(tx, &actor, &c.identity_id.to_string())
                .map_err(|_| CoreError::NotFound(format!("credential {id}")))?;
            let target = format!("credential:{id}");
            if !actor.can_manage_team(identity.owner_id)
                && !actor.acts_on_self(identity.id, "warden:credentials")
            {
                let e = CoreError::Forbidden(format!(
                    "you may not revoke credentials of team {:?}",
                    identity.owner
                ));
                return Ok(Err(job.deny(tx, &actor, "credential.revoke", target, e)?));
            }
            if c.revoked_at.is_some() {
                return Ok(Err(CoreError::InvalidState(
                    "the credential is already revoked".into(),
                )));
            }
            c.revoked_at = Some(job.now());
            c.revoke_reason = reason.clone().or_else(|| Some("revoked".into()));
            tx.update_credential(&c)?;
            job.record(
                tx,
                &actor,
                "credential.revoke",
                target,
                AuditOutcome::Success,
                json!({ "identity": identity.id.to_string(), "reason": c.revoke_reason }),
            )?;
            Ok(Ok(c))
        })
        .await?
    }

    /// Revokes rotated-out credentials whose overlap has ended. Returns how many.
    pub async fn end_overlaps(&self) -> Result<usize, CoreError> {
        let actor = Actor::system("sweep");
        self.write_as_leader(move |tx, job| {
            let due = tx.overlaps_ended(job.now(), 500)?;
            for mut c in due.iter().cloned() {
                c.revoked_at = Some(job.now());
                c.revoke_reason = Some("rotation overlap ended".into());
                tx.update_credential(&c)?;
                job.record(
                    tx,
                    &actor,
                    "credential.revoke",
                    format!("credential:{}", c.id),
                    AuditOutcome::Success,
                    json!({ "identity": c.identity_id.to_string(), "reason": "rotation overlap ended", "replaced_by": c.replaced_by.map(|u| u.to_string()) }),
                )?;
            }
            Ok(due.len())
        })
        .await
    }
}
