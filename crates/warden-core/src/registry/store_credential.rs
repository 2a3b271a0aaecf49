//! Warden rotates the password it logs in to its own database with.
//!
//! The new password is first staged by the node (its `.next` file), then a write job changes the
//! role's password *inside the same transaction* that records the new version (sealed, in the
//! vault) and its audit event — the database's password and Warden's record change together or
//! not at all — then the node makes it the password new connections use. Connections already open
//! stay valid (PostgreSQL checks passwords only at login). The other nodes hear of it on commit
//! and fetch the new password from the vault with the connections they have. A node that died
//! between the commit and its file update finds the live password in `.next` when it starts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use uuid::Uuid;
use warden_types::{AuditOutcome, RotationOutcome, Secret, SecretVersionState};

use super::Registry;
use super::vault::{append_version, open_value, secret_target, text_of};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::ports::{StoreCredentialSink, Topic};

/// Where the vault keeps the store's login password (not readable through the API: it has no
/// owning identity, so only Warden itself may use it).
pub const STORE_CREDENTIAL_PATH: &str = "warden/store-credential";

impl Registry {
    /// Installs where this node keeps its store password (when it logs in with one).
    pub fn set_store_credential_sink(&self, sink: Arc<dyn StoreCredentialSink>) {
        let _ = self.store_credential.set(sink);
    }

    /// Rotates the store's login password now (admins).
    pub async fn rotate_store_credential(
        &self,
        actor: &Actor,
    ) -> Result<RotationOutcome, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "rotating Warden's database password needs the admin role".into(),
            ));
        }
        let sink = Arc::clone(self.store_credential.get().ok_or_else(|| {
            CoreError::InvalidState(
                "this server has no database password to rotate (PostgreSQL storage with \
                 [postgres] password_file)"
                    .into(),
            )
        })?);
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let password = warden_crypto::random_text(40, warden_crypto::ALPHANUMERIC);
        let verifier = warden_crypto::scram_sha256_verifier(&password);
        sink.stage(&password).map_err(|e| {
            CoreError::InvalidState(format!("staging the new password failed: {e}"))
        })?;
        let a = actor.clone();
        let pw = password.clone();
        let version = self
            .write(move |tx, job| {
                let now = job.now();
                tx.set_own_password(&verifier)?;
                let existing = tx.secret(STORE_CREDENTIAL_PATH)?;
                if existing.as_ref().is_some_and(|s| !s.owner_id.is_nil()) {
                    // Only Warden owns it; anything else is a record someone slipped in.
                    return Err(CoreError::InvalidState(format!(
                        "{STORE_CREDENTIAL_PATH} has an owner; refusing to store the password there"
                    )));
                }
                let mut secret = existing.unwrap_or(Secret {
                    id: Uuid::now_v7(),
                    path: STORE_CREDENTIAL_PATH.into(),
                    owner_id: Uuid::nil(),
                    description: "The password Warden logs in to its database with".into(),
                    current_version: 0,
                    versions: Vec::new(),
                    rotation: None,
                    next_rotation_at: None,
                    database: None,
                    created_at: now,
                    updated_at: now,
                    deleted_at: None,
                    retry_at: None,
                });
                let v = append_version(
                    tx,
                    &*keys,
                    &mut secret,
                    pw.as_bytes(),
                    SecretVersionState::Current,
                    a.label(),
                    None,
                    now,
                )?;
                for x in secret.versions.iter_mut() {
                    if x.version != v && x.state == SecretVersionState::Current {
                        x.state = SecretVersionState::Retired;
                    }
                }
                secret.current_version = v;
                secret.updated_at = now;
                super::vault::prune_versions(tx, &mut secret)?;
                tx.put_secret(&secret)?;
                tx.notify_peers(Topic::StoreCredential);
                job.record(
                    tx,
                    &a,
                    "vault.store_credential_rotate",
                    secret_target(STORE_CREDENTIAL_PATH),
                    AuditOutcome::Success,
                    json!({ "version": v }),
                )?;
                Ok(v)
            })
            .await?;
        sink.commit(&password).map_err(|e| {
            CoreError::InvalidState(format!(
                "the database has the new password, but saving it on this node failed ({e}); \
                 it is kept in the password file's .next copy, which the node uses at its next start"
            ))
        })?;
        Ok(RotationOutcome {
            path: STORE_CREDENTIAL_PATH.into(),
            result: "rotated".into(),
            version,
            reason: None,
        })
    }

    /// After another node rotated the store password: fetch it from the vault (with a connection
    /// still open) and use it for new connections. Returns whether it did.
    pub async fn refresh_store_credential(&self) -> Result<bool, CoreError> {
        let Some(sink) = self.store_credential.get().map(Arc::clone) else {
            return Ok(false);
        };
        if !self.store_credential_stale.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let result = (|| {
            let keys = Arc::clone(&self.vault_parts()?.keys);
            let store = self.reader()?;
            let s = store
                .secret(STORE_CREDENTIAL_PATH)?
                .ok_or_else(|| CoreError::NotFound("the store credential".into()))?;
            let sealed = store
                .secret_envelope(STORE_CREDENTIAL_PATH, s.current_version)?
                .ok_or_else(|| CoreError::NotFound("the store credential's value".into()))?;
            text_of(open_value(
                &*keys,
                STORE_CREDENTIAL_PATH,
                s.current_version,
                &sealed,
            )?)
        })();
        let pw = match result {
            Ok(pw) => pw,
            Err(e) => {
                // Try again at the next tick.
                self.store_credential_stale.store(true, Ordering::Release);
                return Err(e);
            }
        };
        sink.commit(&pw.0)
            .map_err(|e| CoreError::InvalidState(format!("saving the new password: {e}")))?;
        Ok(true)
    }
}
