//! The vault: secrets that must still exist, envelope-encrypted, versioned, owned by an identity,
//! readable only by those allowed, every read and write audited.
//!
//! Access: an NHI needs a granted scope `secret:read:<glob>` / `secret:write:<glob>` covering the
//! path (and, when it authenticated with an access token, the token must carry it too). An
//! operator needs to manage the team that owns the secret's owner identity (admins everywhere,
//! members in their teams); auditors see metadata, never values.
//!
//! Values are sealed inside the write job (the version number is part of the associated data,
//! and only the job knows it) and opened after the read job committed its audit event, outside
//! the writer.

use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_crypto::envelope::{self, KeyWrapper};
use warden_types::{
    AuditOutcome, IdentityStatus, LeaseKind, PutSecretRequest, RewrapReport, RotationPolicy,
    Rotator, Secret, SecretRead, SecretText, SecretVersion, SecretVersionState, VaultLease,
};
use zeroize::Zeroizing;

use super::{Registry, resolve_identity};
use crate::actor::{Actor, Principal};
use crate::error::{CoreError, StoreError};
use crate::ports::{Envelope, ReadStore, VaultTargets, WriteTx};
use crate::scope;

/// Paths only Warden itself writes (its database password): nobody can pre-create one and own it.
pub const RESERVED_PREFIX: &str = "warden/";

/// Largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 32 * 1024;
pub const MAX_PATH_LEN: usize = 256;
/// Versions whose values are kept; older retired ones are destroyed.
pub const MAX_VALUES_KEPT: usize = 20;
/// Version records kept in a secret's metadata.
const MAX_VERSION_RECORDS: usize = 100;
/// Longest lease on a secret read.
pub const MAX_READ_LEASE: Duration = Duration::days(1);

/// The vault's master keys and its connectors to the outside, installed at start.
pub(crate) struct VaultParts {
    pub(crate) keys: Arc<dyn KeyWrapper>,
    pub(crate) targets: Arc<dyn VaultTargets>,
    /// When this process installed them: a pending rotation older than this cannot be running
    /// here.
    pub(crate) started_at: OffsetDateTime,
}

/// Checks a secret path: `/`-separated segments of `A-Za-z0-9._-`, no empty, `.` or `..` segment.
pub fn check_path(path: &str) -> Result<(), CoreError> {
    let bad = |why: &str| CoreError::field("path", why.to_owned());
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(bad(&format!("1 to {MAX_PATH_LEN} characters")));
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(bad(
                "segments separated by single `/`, none empty, `.` or `..`",
            ));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad("letters, digits, `.`, `_`, `-` and `/` only"));
        }
    }
    Ok(())
}

pub(crate) fn secret_target(path: &str) -> String {
    format!("secret:{path}")
}

/// The associated data binding a version's ciphertext and wrapped key to its place.
pub(crate) fn aad(path: &str, version: u32) -> Vec<u8> {
    format!("warden.vault.v1|{path}|{version}").into_bytes()
}

fn check_value(field: &str, v: &SecretText) -> Result<(), CoreError> {
    if v.0.is_empty() || v.0.len() > MAX_SECRET_BYTES {
        return Err(CoreError::field(
            field,
            format!("1 to {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_url(field: &str, url: &str) -> Result<(), CoreError> {
    if url.len() > 2048
        || !(url.starts_with("https://") || url.starts_with("http://"))
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CoreError::field(field, "an http(s) URL"));
    }
    Ok(())
}

/// A PostgreSQL role name Warden may put into SQL unquoted inside double quotes.
pub(crate) fn check_role_name(field: &str, name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || name.as_bytes()[0].is_ascii_digit()
    {
        return Err(CoreError::field(
            field,
            "a PostgreSQL role name of lowercase letters, digits and `_` (at most 63)",
        ));
    }
    Ok(())
}

/// When a secret with this policy rotates next after `now`, if ever on its own.
pub(crate) fn next_rotation(p: &RotationPolicy, now: OffsetDateTime) -> Option<OffsetDateTime> {
    match &p.schedule {
        Some(cron) => crate::cron::Cron::parse(cron)
            .ok()
            .and_then(|c| c.next_after(now)),
        None => (p.every_secs > 0).then(|| now + secs(p.every_secs)),
    }
}

pub(crate) fn check_rotation(p: &RotationPolicy) -> Result<(), CoreError> {
    if let Some(cron) = &p.schedule {
        if p.every_secs != 0 {
            return Err(CoreError::field(
                "rotation.schedule",
                "either every_secs or a schedule, not both",
            ));
        }
        crate::cron::Cron::parse(cron)?;
    }
    if p.every_secs > 10 * 366 * 86_400 {
        return Err(CoreError::field("rotation.every_secs", "at most 10 years"));
    }
    if p.every_secs != 0 && p.every_secs < 60 {
        return Err(CoreError::field(
            "rotation.every_secs",
            "0 (on demand) or at least 60",
        ));
    }
    if p.overlap_secs > 30 * 86_400 {
        return Err(CoreError::field("rotation.overlap_secs", "at most 30 days"));
    }
    if p.every_secs != 0 && p.overlap_secs >= p.every_secs {
        return Err(CoreError::field(
            "rotation.overlap_secs",
            "shorter than the rotation interval",
        ));
    }
    if p.notify.len() > 10 {
        return Err(CoreError::field("rotation.notify", "at most 10 URLs"));
    }
    for u in &p.notify {
        check_url("rotation.notify", u)?;
    }
    match &p.rotator {
        Rotator::Random { length } => {
            if !(16..=256).contains(length) {
                return Err(CoreError::field("rotation.rotator.length", "16 to 256"));
            }
        }
        Rotator::Postgres {
            database,
            accounts,
            check_sql,
        } => {
            check_path(database)?;
            if check_sql
                .as_ref()
                .is_some_and(|q| q.is_empty() || q.len() > 1000)
            {
                return Err(CoreError::field(
                    "rotation.rotator.check_sql",
                    "1 to 1000 characters",
                ));
            }
            if accounts.is_empty() || accounts.len() > 2 {
                return Err(CoreError::field(
                    "rotation.rotator.accounts",
                    "one account, or two rotated in turn (no failed logins during rotation)",
                ));
            }
            for a in accounts {
                check_role_name("rotation.rotator.accounts", a)?;
            }
            if accounts.len() == 2 && accounts[0] == accounts[1] {
                return Err(CoreError::field(
                    "rotation.rotator.accounts",
                    "two different accounts",
                ));
            }
        }
        Rotator::WardenCredential { identity } => {
            if identity.is_empty() || identity.len() > 200 {
                return Err(CoreError::field("rotation.rotator.identity", "an identity"));
            }
        }
        Rotator::Webhook { url, check_url: c } => {
            check_url("rotation.rotator.url", url)?;
            if let Some(c) = c {
                check_url("rotation.rotator.check_url", c)?;
            }
        }
    }
    Ok(())
}

/// Whether `actor` may point a rotation policy at its targets: a Warden credential of an identity
/// it manages (or its own), a database connection it may write — never the connection's own
/// admin role. Checked when the policy is set, since scheduled rotations run as Warden.
pub(crate) fn check_rotation_targets(
    store: &dyn ReadStore,
    actor: &Actor,
    policy: &RotationPolicy,
) -> Result<(), CoreError> {
    match &policy.rotator {
        Rotator::WardenCredential { identity } => {
            let i = resolve_identity(store, actor, identity)?;
            if actor.can_manage_team(i.owner_id) || identity_of(actor) == Some(i.id) {
                Ok(())
            } else {
                Err(CoreError::Forbidden(format!(
                    "you may not rotate the credentials of {:?}",
                    i.name
                )))
            }
        }
        Rotator::Postgres {
            database, accounts, ..
        } => {
            let db = store
                .secret(database)?
                .filter(|s| s.deleted_at.is_none())
                .ok_or_else(|| CoreError::NotFound(format!("database connection {database:?}")))?;
            let Some(conn) = &db.database else {
                return Err(CoreError::field(
                    "rotation.rotator.database",
                    "not a database connection",
                ));
            };
            if !may_use(store, actor, &db, "write")? {
                return Err(CoreError::Forbidden(format!(
                    "you may not change roles on {database:?}"
                )));
            }
            if accounts.contains(&conn.username) {
                return Err(CoreError::field(
                    "rotation.rotator.accounts",
                    "not the role Warden manages the database with",
                ));
            }
            Ok(())
        }
        Rotator::Random { .. } | Rotator::Webhook { .. } => Ok(()),
    }
}

/// The team that owns a secret (its owner identity's team).
fn owner_team(store: &dyn ReadStore, secret: &Secret) -> Result<Option<Uuid>, CoreError> {
    Ok(store.identity(secret.owner_id)?.map(|i| i.owner_id))
}

/// Whether an NHI actor may `action` the secret at `path` owned by `owner_team`: its granted
/// scopes (and its token's, if it used one) cover it, and the secret belongs to the NHI's own
/// team — a scope never reaches across teams (so a member cannot grant their bot another team's
/// secrets, nor Warden's own, which no team owns).
fn identity_allows(
    store: &dyn ReadStore,
    actor: &Actor,
    action: &str,
    path: &str,
    owner_team: Option<Uuid>,
) -> Result<bool, CoreError> {
    let Principal::Identity {
        id, token_scopes, ..
    } = &actor.principal
    else {
        return Ok(false);
    };
    let Some(identity) = store.identity(*id)? else {
        return Ok(false);
    };
    Ok(identity.status == IdentityStatus::Active
        && owner_team == Some(identity.owner_id)
        && scope::allows_secret(&identity.scopes, action, path)
        && token_scopes
            .as_ref()
            .is_none_or(|t| scope::allows_secret(t, action, path)))
}

/// May `actor` read the value of (`read`) or write (`write`) `secret`?
pub(crate) fn may_use(
    store: &dyn ReadStore,
    actor: &Actor,
    secret: &Secret,
    action: &str,
) -> Result<bool, CoreError> {
    match &actor.principal {
        Principal::System => Ok(true),
        Principal::Operator { .. } => {
            Ok(owner_team(store, secret)?.is_some_and(|t| actor.can_manage_team(t)))
        }
        Principal::Identity { .. } => identity_allows(
            store,
            actor,
            action,
            &secret.path,
            owner_team(store, secret)?,
        ),
        Principal::Anonymous => Ok(false),
    }
}

/// May `actor` see `secret`'s metadata?
pub(crate) fn may_see(
    store: &dyn ReadStore,
    actor: &Actor,
    secret: &Secret,
) -> Result<bool, CoreError> {
    match &actor.principal {
        Principal::System => Ok(true),
        Principal::Operator { .. } => {
            Ok(owner_team(store, secret)?.is_some_and(|t| actor.can_read_team(t)))
        }
        Principal::Identity { .. } => {
            let team = owner_team(store, secret)?;
            Ok(identity_allows(store, actor, "read", &secret.path, team)?
                || identity_allows(store, actor, "write", &secret.path, team)?)
        }
        Principal::Anonymous => Ok(false),
    }
}

/// Appends a new version sealed under `keys` to `secret` (in the job's transaction) and returns
/// its number. `state` is `Current` for a write, `Pending` for a rotation in progress.
#[allow(
    clippy::too_many_arguments,
    reason = "each is one field of the new version; a struct would only rename them"
)]
pub(crate) fn append_version(
    tx: &mut dyn WriteTx,
    keys: &dyn KeyWrapper,
    secret: &mut Secret,
    value: &[u8],
    state: SecretVersionState,
    created_by: String,
    account: Option<String>,
    now: OffsetDateTime,
) -> Result<u32, CoreError> {
    let version = secret.latest_version() + 1;
    let sealed = envelope::seal(keys, &aad(&secret.path, version), value)
        .map_err(|e| CoreError::Store(StoreError::Internal(format!("sealing a secret: {e}"))))?;
    tx.put_secret_envelope(&secret.path, version, Some(&sealed))?;
    secret.versions.push(SecretVersion {
        version,
        state,
        created_at: now,
        created_by,
        key_id: sealed.key_id.clone(),
        retire_at: None,
        account,
    });
    Ok(version)
}

/// Destroys the values of old retired versions beyond [`MAX_VALUES_KEPT`] and forgets the oldest
/// records beyond [`MAX_VERSION_RECORDS`].
pub(crate) fn prune_versions(tx: &mut dyn WriteTx, secret: &mut Secret) -> Result<(), CoreError> {
    let kept = secret
        .versions
        .iter()
        .filter(|v| v.state != SecretVersionState::Destroyed)
        .count();
    let mut excess = kept.saturating_sub(MAX_VALUES_KEPT);
    for v in secret.versions.iter_mut() {
        if excess == 0 {
            break;
        }
        if matches!(
            v.state,
            SecretVersionState::Retired | SecretVersionState::Failed
        ) {
            tx.put_secret_envelope(&secret.path, v.version, None)?;
            v.state = SecretVersionState::Destroyed;
            excess -= 1;
        }
    }
    while secret.versions.len() > MAX_VERSION_RECORDS {
        let first = secret.versions.remove(0);
        if first.state != SecretVersionState::Destroyed {
            tx.put_secret_envelope(&secret.path, first.version, None)?;
        }
    }
    Ok(())
}

/// Opens a stored version's value.
pub(crate) fn open_value(
    keys: &dyn KeyWrapper,
    path: &str,
    version: u32,
    sealed: &Envelope,
) -> Result<Zeroizing<Vec<u8>>, CoreError> {
    envelope::open(keys, &aad(path, version), sealed).map_err(|_| {
        CoreError::Store(StoreError::Corrupt(format!(
            "the value of {path} version {version} does not open with master key {} \
             (tampered with, or wrapped under another key)",
            sealed.key_id
        )))
    })
}

pub(crate) fn text_of(bytes: Zeroizing<Vec<u8>>) -> Result<SecretText, CoreError> {
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(SecretText(s.to_owned())),
        Err(_) => Err(CoreError::Store(StoreError::Corrupt(
            "a secret value is not UTF-8".into(),
        ))),
    }
}

impl Registry {
    /// Installs the vault's master keys and connectors (at start, once).
    pub fn set_vault(&self, keys: Arc<dyn KeyWrapper>, targets: Arc<dyn VaultTargets>) {
        let started_at = self.now();
        let _ = self.vault.set(VaultParts {
            keys,
            targets,
            started_at,
        });
    }

    pub(crate) fn vault_parts(&self) -> Result<&VaultParts, CoreError> {
        self.vault.get().ok_or_else(|| {
            CoreError::InvalidState("the vault has no master key configured on this server".into())
        })
    }

    /// Refuses to start when stored values are wrapped under a master key that is not
    /// configured: nothing is decrypted, nothing is changed.
    pub fn check_vault(&self) -> Result<(), CoreError> {
        let parts = self.vault_parts()?;
        let stored = self.reader()?.vault_key_ids()?;
        let unknown: Vec<&String> = stored.iter().filter(|id| !parts.keys.knows(id)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(CoreError::InvalidState(format!(
            "the vault's values are wrapped under master key(s) {} but the configured key is {}; \
             start with the right vault key (WARDEN_VAULT_KEY or [vault] key_file), and list the \
             old one in previous_key_files while `warden vault rewrap` runs",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            parts.keys.current_id()
        )))
    }

    /// Writes a new version of the secret at `path` (creating the secret on its first write).
    pub async fn put_secret(
        &self,
        actor: &Actor,
        path: &str,
        req: PutSecretRequest,
    ) -> Result<Secret, CoreError> {
        check_path(path)?;
        if path.starts_with(RESERVED_PREFIX) {
            return Err(CoreError::field(
                "path",
                format!("{RESERVED_PREFIX} is reserved for Warden's own secrets"),
            ));
        }
        check_value("value", &req.value)?;
        if let Some(d) = &req.description {
            crate::validate::reason("description", Some(d), false)?;
        }
        if let Some(r) = &req.rotation {
            check_rotation(r)?;
        }
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let (actor, path) = (actor.clone(), path.to_owned());
        self.write(move |tx, job| {
            let now = job.now();
            let target = secret_target(&path);
            let existing = tx.secret(&path)?;
            if let Some(cas) = req.cas {
                let latest = existing.as_ref().map_or(0, |s| s.latest_version());
                if latest != cas {
                    return Ok(Err(CoreError::InvalidState(format!(
                        "check-and-set failed: the latest version is {latest}, not {cas}"
                    ))));
                }
            }
            let mut secret = match existing {
                Some(s) => {
                    if s.database.is_some() {
                        return Ok(Err(CoreError::InvalidState(
                            "this secret is a database connection; change it with `warden db`"
                                .into(),
                        )));
                    }
                    s
                }
                None => {
                    let owner = match (&req.owner, &actor.principal) {
                        (Some(o), _) => match resolve_identity(tx, &actor, o) {
                            Ok(i) => i,
                            Err(e) => return Ok(Err(e)),
                        },
                        (None, Principal::Identity { id, .. }) => match tx.identity(*id)? {
                            Some(i) => i,
                            None => return Ok(Err(CoreError::NotFound("identity".into()))),
                        },
                        (None, _) => {
                            return Ok(Err(CoreError::field(
                                "owner",
                                "required when the secret is created: the identity that owns it",
                            )));
                        }
                    };
                    if let Principal::Identity { id, .. } = &actor.principal
                        && *id != owner.id
                    {
                        let e = CoreError::Forbidden(
                            "an identity may only create secrets it owns".into(),
                        );
                        return Ok(Err(job.deny(tx, &actor, "secret.write", target, e)?));
                    }
                    if owner.status == IdentityStatus::Retired {
                        return Ok(Err(CoreError::InvalidState(format!(
                            "identity {:?} is retired",
                            owner.name
                        ))));
                    }
                    Secret {
                        id: Uuid::now_v7(),
                        path: path.clone(),
                        owner_id: owner.id,
                        description: String::new(),
                        current_version: 0,
                        versions: Vec::new(),
                        rotation: None,
                        next_rotation_at: None,
                        database: None,
                        created_at: now,
                        updated_at: now,
                        deleted_at: None,
                        retry_at: None,
                    }
                }
            };
            if !may_use(tx, &actor, &secret, "write")? {
                let e = CoreError::Forbidden(format!("you may not write the secret {path:?}"));
                return Ok(Err(job.deny(tx, &actor, "secret.write", target, e)?));
            }
            if let Some(r) = &req.rotation
                && let Err(e) = check_rotation_targets(tx, &actor, r)
            {
                return Ok(Err(match e {
                    CoreError::Forbidden(_) => job.deny(tx, &actor, "secret.write", target, e)?,
                    other => other,
                }));
            }
            if secret
                .versions
                .iter()
                .any(|v| v.state == SecretVersionState::Pending)
            {
                return Ok(Err(CoreError::InvalidState(
                    "a rotation of this secret is in progress".into(),
                )));
            }
            if req.owner.is_some() && secret.current_version > 0 {
                let owner = resolve_identity(tx, &actor, req.owner.as_deref().unwrap_or(""))?;
                if owner.id != secret.owner_id {
                    return Ok(Err(CoreError::InvalidState(
                        "the owner of an existing secret does not change through a write".into(),
                    )));
                }
            }
            // A value written by hand for a PostgreSQL rotator belongs to its first account
            // until a rotation says otherwise.
            let account = match req.rotation.as_ref().or(secret.rotation.as_ref()) {
                Some(RotationPolicy {
                    rotator: Rotator::Postgres { accounts, .. },
                    ..
                }) => accounts.first().cloned(),
                _ => None,
            };
            let version = append_version(
                tx,
                &*keys,
                &mut secret,
                req.value.0.as_bytes(),
                SecretVersionState::Current,
                actor.label(),
                account,
                now,
            )?;
            // A replaced database account keeps its password until the maintenance job retires
            // it (now); other values are simply retired.
            let accounts_live = matches!(
                secret.rotation.as_ref().or(req.rotation.as_ref()),
                Some(RotationPolicy {
                    rotator: Rotator::Postgres { .. },
                    ..
                })
            );
            for v in secret.versions.iter_mut() {
                if v.version == version {
                    continue;
                }
                match v.state {
                    SecretVersionState::Current if accounts_live => {
                        v.state = SecretVersionState::Previous;
                        v.retire_at = Some(now);
                    }
                    SecretVersionState::Current => v.state = SecretVersionState::Retired,
                    SecretVersionState::Previous if !accounts_live => {
                        v.state = SecretVersionState::Retired;
                        v.retire_at = None;
                    }
                    _ => {}
                }
            }
            secret.current_version = version;
            if let Some(d) = req.description {
                secret.description = d;
            }
            if let Some(r) = req.rotation {
                secret.next_rotation_at = next_rotation(&r, now);
                secret.rotation = Some(r);
            } else if let Some(r) = &secret.rotation {
                secret.next_rotation_at = next_rotation(r, now);
            }
            secret.deleted_at = None;
            secret.updated_at = now;
            prune_versions(tx, &mut secret)?;
            tx.put_secret(&secret)?;
            let key_id = secret.version(version).map(|v| v.key_id.clone());
            job.record(
                tx,
                &actor,
                "secret.write",
                target,
                AuditOutcome::Success,
                json!({ "version": version, "owner": secret.owner_id.to_string(), "key_id": key_id }),
            )?;
            Ok(Ok(secret))
        })
        .await?
    }

    /// Reads a secret's value (the current version, or `version`), optionally on a lease. The
    /// read is audited (committed) before the value is decrypted and returned.
    pub async fn read_secret(
        &self,
        actor: &Actor,
        path: &str,
        version: Option<u32>,
        lease_secs: Option<u64>,
    ) -> Result<SecretRead, CoreError> {
        check_path(path)?;
        let lease_ttl = match lease_secs {
            None => None,
            Some(s) => {
                let d = secs(s);
                if s == 0 || d > MAX_READ_LEASE {
                    return Err(CoreError::field("lease_ttl", "1 second to 1 day"));
                }
                Some(d)
            }
        };
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let (actor, owned) = (actor.clone(), path.to_owned());
        let (sealed, version, account, lease) = self
            .write(move |tx, job| {
                let path = owned;
                let target = secret_target(&path);
                let not_found = || CoreError::NotFound(format!("secret {path:?}"));
                let Some(secret) = tx.secret(&path)? else {
                    return Ok(Err(not_found()));
                };
                if !may_use(tx, &actor, &secret, "read")? {
                    // Refused and audited; who may not even see it learns nothing of its existence.
                    let visible = may_see(tx, &actor, &secret)?;
                    let e = CoreError::Forbidden(format!("you may not read the secret {path:?}"));
                    let e = job.deny(tx, &actor, "secret.read", target, e)?;
                    return Ok(Err(if visible { e } else { not_found() }));
                }
                if secret.deleted_at.is_some() {
                    return Ok(Err(CoreError::NotFound(format!(
                        "secret {path:?} (deleted)"
                    ))));
                }
                if secret.database.is_some() {
                    return Ok(Err(CoreError::Forbidden(
                        "a database connection's password is for Warden only; ask for dynamic credentials".into(),
                    )));
                }
                let v = version.unwrap_or(secret.current_version);
                let Some(info) = secret.version(v) else {
                    return Ok(Err(CoreError::NotFound(format!(
                        "version {v} of secret {path:?}"
                    ))));
                };
                if matches!(
                    info.state,
                    SecretVersionState::Destroyed
                        | SecretVersionState::Pending
                        | SecretVersionState::Failed
                ) {
                    return Ok(Err(CoreError::InvalidState(format!(
                        "version {v} of secret {path:?} is {}",
                        info.state
                    ))));
                }
                let Some(sealed) = tx.secret_envelope(&path, v)? else {
                    return Ok(Err(CoreError::NotFound(format!(
                        "version {v} of secret {path:?}"
                    ))));
                };
                let now = job.now();
                let lease = match lease_ttl {
                    None => None,
                    Some(ttl) => {
                        let lease = VaultLease {
                            id: Uuid::now_v7(),
                            kind: LeaseKind::Read,
                            path: format!("secrets/{path}"),
                            identity_id: identity_of(&actor),
                            holder: actor.label(),
                            username: None,
                            created_at: now,
                            expires_at: now + ttl,
                            max_expires_at: now + MAX_READ_LEASE,
                            revoked_at: None,
                            last_error: None,
                            retry_at: None,
                        };
                        tx.put_vault_lease(&lease)?;
                        Some(lease)
                    }
                };
                job.record(
                    tx,
                    &actor,
                    "secret.read",
                    target,
                    AuditOutcome::Success,
                    json!({ "version": v, "lease": lease.as_ref().map(|l| l.id.to_string()) }),
                )?;
                Ok(Ok((sealed, v, info.account.clone(), lease)))
            })
            .await??;
        let value = text_of(open_value(&*keys, path, version, &sealed)?)?;
        Ok(SecretRead {
            path: path.to_owned(),
            version,
            value,
            account,
            lease,
        })
    }

    /// A secret's metadata and versions (never values), for those who may see it.
    pub fn secret_metadata(&self, actor: &Actor, path: &str) -> Result<Secret, CoreError> {
        check_path(path)?;
        let store = self.reader()?;
        match store.secret(path)? {
            Some(s) if may_see(&*store, actor, &s)? => Ok(s),
            _ => Err(CoreError::NotFound(format!("secret {path:?}"))),
        }
    }

    /// Secrets under `prefix` the actor may see, by path.
    pub fn list_secrets(
        &self,
        actor: &Actor,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Secret>, CoreError> {
        let store = self.reader()?;
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        // Invisible secrets are skipped, so read on until the page is full or the end.
        loop {
            let batch = store.list_secrets(prefix, cursor.as_deref(), 500)?;
            let done = batch.len() < 500;
            cursor = batch.last().map(|s| s.path.clone());
            for s in batch {
                if may_see(&*store, actor, &s)? {
                    out.push(s);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Soft-deletes a secret: reads are refused, versions are kept until destroyed; a new write
    /// restores it.
    pub async fn delete_secret(&self, actor: &Actor, path: &str) -> Result<Secret, CoreError> {
        check_path(path)?;
        let (actor, path) = (actor.clone(), path.to_owned());
        self.write(move |tx, job| {
            let target = secret_target(&path);
            let Some(mut secret) = tx.secret(&path)? else {
                return Ok(Err(CoreError::NotFound(format!("secret {path:?}"))));
            };
            if !may_use(tx, &actor, &secret, "write")? {
                let visible = may_see(tx, &actor, &secret)?;
                let e = CoreError::Forbidden(format!("you may not delete the secret {path:?}"));
                let e = job.deny(tx, &actor, "secret.delete", target, e)?;
                return Ok(Err(if visible {
                    e
                } else {
                    CoreError::NotFound(format!("secret {path:?}"))
                }));
            }
            if secret.database.is_some() {
                let active = crate::ports::LeaseFilter {
                    prefix: Some(format!("creds/{path}/")),
                    identity: None,
                    active_only: true,
                };
                if !tx.list_vault_leases(&active, 1)?.is_empty() {
                    return Ok(Err(CoreError::InvalidState(
                        "logins issued on this connection are still live; revoke them first \
                         (warden lease revoke-prefix creds/PATH/)"
                            .into(),
                    )));
                }
            }
            let now = job.now();
            secret.deleted_at = Some(now);
            secret.updated_at = now;
            tx.put_secret(&secret)?;
            job.record(
                tx,
                &actor,
                "secret.delete",
                target,
                AuditOutcome::Success,
                json!({}),
            )?;
            Ok(Ok(secret))
        })
        .await?
    }

    /// Erases the values of one version, or of every version (the metadata stays, for history).
    /// Irreversible.
    pub async fn destroy_secret(
        &self,
        actor: &Actor,
        path: &str,
        version: Option<u32>,
    ) -> Result<Secret, CoreError> {
        check_path(path)?;
        let (actor, path) = (actor.clone(), path.to_owned());
        self.write(move |tx, job| {
            let target = secret_target(&path);
            let Some(mut secret) = tx.secret(&path)? else {
                return Ok(Err(CoreError::NotFound(format!("secret {path:?}"))));
            };
            if !may_use(tx, &actor, &secret, "write")? {
                let visible = may_see(tx, &actor, &secret)?;
                let e = CoreError::Forbidden(format!("you may not destroy the secret {path:?}"));
                let e = job.deny(tx, &actor, "secret.destroy", target, e)?;
                return Ok(Err(if visible {
                    e
                } else {
                    CoreError::NotFound(format!("secret {path:?}"))
                }));
            }
            if secret.database.is_some() {
                let active = crate::ports::LeaseFilter {
                    prefix: Some(format!("creds/{path}/")),
                    identity: None,
                    active_only: true,
                };
                if !tx.list_vault_leases(&active, 1)?.is_empty() {
                    return Ok(Err(CoreError::InvalidState(
                        "logins issued on this connection are still live; revoke them first \
                         (warden lease revoke-prefix creds/PATH/)"
                            .into(),
                    )));
                }
            }
            if secret
                .versions
                .iter()
                .any(|v| v.state == SecretVersionState::Pending)
            {
                return Ok(Err(CoreError::InvalidState(
                    "a rotation of this secret is in progress".into(),
                )));
            }
            if let Some(v) = version
                && secret.version(v).is_none()
            {
                return Ok(Err(CoreError::NotFound(format!(
                    "version {v} of secret {path:?}"
                ))));
            }
            let mut destroyed = Vec::new();
            for v in secret.versions.iter_mut() {
                if version.is_none_or(|x| x == v.version)
                    && v.state != SecretVersionState::Destroyed
                {
                    tx.put_secret_envelope(&path, v.version, None)?;
                    v.state = SecretVersionState::Destroyed;
                    v.retire_at = None;
                    destroyed.push(v.version);
                }
            }
            if version.is_none_or(|v| v == secret.current_version) {
                secret.current_version = 0;
                secret.deleted_at.get_or_insert(job.now());
            }
            secret.updated_at = job.now();
            tx.put_secret(&secret)?;
            job.record(
                tx,
                &actor,
                "secret.destroy",
                target,
                AuditOutcome::Success,
                json!({ "versions": destroyed }),
            )?;
            Ok(Ok(secret))
        })
        .await?
    }

    /// Moves every data key to the current master key (admins). Runs beside live traffic, in
    /// batches; a value changed meanwhile is left for the next pass. Values are not re-encrypted.
    pub async fn rewrap_vault(
        &self,
        actor: &Actor,
        limit: usize,
    ) -> Result<RewrapReport, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "re-wrapping the vault needs the admin role".into(),
            ));
        }
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let current = keys.current_id().to_owned();
        let mut rewrapped = 0u64;
        while (rewrapped as usize) < limit {
            let batch = self
                .reader()?
                .envelopes_not_under(&current, 200.min(limit - rewrapped as usize))?;
            if batch.is_empty() {
                break;
            }
            let mut moved = Vec::with_capacity(batch.len());
            for item in batch {
                let new = envelope::rewrap(&*keys, &aad(&item.path, item.version), &item.envelope)
                    .map_err(|_| {
                        CoreError::Store(StoreError::Corrupt(format!(
                            "{} version {} does not open with master key {}",
                            item.path, item.version, item.envelope.key_id
                        )))
                    })?;
                moved.push((item, new));
            }
            let a = actor.clone();
            let cur = current.clone();
            let n = self
                .write(move |tx, job| {
                    let mut n = 0u64;
                    for (item, new) in &moved {
                        // Only if nothing changed it since it was read.
                        if tx.secret_envelope(&item.path, item.version)?.as_ref()
                            == Some(&item.envelope)
                        {
                            tx.put_secret_envelope(&item.path, item.version, Some(new))?;
                            if let Some(mut s) = tx.secret(&item.path)?
                                && let Some(v) = s.version_mut(item.version)
                            {
                                v.key_id = new.key_id.clone();
                                tx.put_secret(&s)?;
                            }
                            n += 1;
                        }
                    }
                    job.record(
                        tx,
                        &a,
                        "vault.rewrap",
                        "vault".into(),
                        AuditOutcome::Success,
                        json!({ "rewrapped": n, "key_id": cur }),
                    )?;
                    Ok(n)
                })
                .await?;
            if n == 0 {
                break;
            }
            rewrapped += n;
        }
        let remaining = self.reader()?.envelopes_not_under(&current, 100_000)?.len() as u64;
        Ok(RewrapReport {
            key_id: current,
            rewrapped,
            remaining,
        })
    }
}

pub(crate) fn identity_of(actor: &Actor) -> Option<Uuid> {
    match &actor.principal {
        Principal::Identity { id, .. } => Some(*id),
        _ => None,
    }
}

/// Seconds from input as a duration, at most 100 years (so adding it to a time cannot overflow).
pub(crate) fn secs(s: u64) -> Duration {
    const MAX: u64 = 100 * 366 * 86_400;
    Duration::seconds(i64::try_from(s.min(MAX)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for ok in ["payments/stripe-key", "a", "db/main.password", "A_b/c-1"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a b", "a\nb", "ü"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn role_names_need_no_quoting() {
        assert!(check_role_name("x", "app_a").is_ok());
        for bad in ["", "App", "a-b", "1a", "a\"b", "a;drop"] {
            assert!(check_role_name("x", bad).is_err(), "{bad}");
        }
    }
}
