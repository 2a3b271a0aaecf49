//! Leases and dynamic PostgreSQL credentials.
//!
//! A dynamic login is recorded as a lease *before* the role is created (so a crash right after
//! creating it still leaves a record the sweeper will act on), is created with `VALID UNTIL` its
//! lease's end (so it dies even if Warden is down), and is dropped — sessions ended, objects
//! dropped — when the lease expires or is revoked. A revocation whose target is unreachable stays
//! due and is retried by the sweeper.

use std::sync::Arc;

use serde_json::json;
use time::Duration;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use warden_types::{
    AddDatabaseRequest, AuditOutcome, DatabaseConnection, LeaseKind, LeasesRevoked, PostgresCreds,
    PostgresCredsRequest, Secret, SecretText, SecretVersionState, VaultLease,
};
use zeroize::Zeroizing;

use super::vault::{
    append_version, check_path, check_role_name, identity_of, may_use, open_value, secret_target,
    secs,
};
use super::{Registry, resolve_identity};
use crate::actor::{Actor, Principal};
use crate::error::CoreError;
use crate::ports::{LeaseFilter, PgLogin, ReadStore};
use crate::scope;

/// Longest a dynamic credential may live.
pub const MAX_DYNAMIC_TTL: Duration = Duration::days(30);
const DATABASES: &str = "databases/";

fn lease_target(id: Uuid) -> String {
    format!("lease:{id}")
}

/// `creds/<database path>/<role>` → (database path, role).
fn split_creds_path(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix("creds/")?.rsplit_once('/')
}

fn check_role_template_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        return Err(CoreError::field(
            "roles",
            "role template names: lowercase letters, digits, `_`, `-` (at most 63)",
        ));
    }
    Ok(())
}

fn check_database(req: &AddDatabaseRequest) -> Result<(), CoreError> {
    check_path(&format!("{DATABASES}{}", req.name))?;
    if req.name.contains('/') {
        return Err(CoreError::field("name", "one path segment"));
    }
    if req.host.is_empty()
        || req.host.len() > 253
        || req
            .host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CoreError::field("host", "a host name or address"));
    }
    if req.port == 0 {
        return Err(CoreError::field("port", "1 to 65535"));
    }
    if req.dbname.is_empty() || req.dbname.len() > 63 || req.dbname.chars().any(char::is_control) {
        return Err(CoreError::field("dbname", "1 to 63 characters"));
    }
    check_role_name("username", &req.username)?;
    if !matches!(req.sslmode.as_str(), "disable" | "verify-full") {
        return Err(CoreError::field("sslmode", "verify-full or disable"));
    }
    if let Some(ca) = &req.ca_pem
        && (ca.len() > 64 * 1024 || !ca.contains("-----BEGIN CERTIFICATE-----"))
    {
        return Err(CoreError::field(
            "ca_pem",
            "PEM certificates, at most 64 KiB",
        ));
    }
    if req.password.0.is_empty() || req.password.0.len() > 1024 {
        return Err(CoreError::field("password", "1 to 1024 bytes"));
    }
    if req.roles.len() > 50 {
        return Err(CoreError::field("roles", "at most 50 role templates"));
    }
    for (name, t) in &req.roles {
        check_role_template_name(name)?;
        if t.creation.is_empty() || t.creation.len() > 20 || t.revocation.len() > 20 {
            return Err(CoreError::field(
                "roles",
                "1 to 20 creation statements and at most 20 revocation statements",
            ));
        }
        if t.creation
            .iter()
            .chain(&t.revocation)
            .any(|s| s.is_empty() || s.len() > 4096)
        {
            return Err(CoreError::field(
                "roles",
                "statements of 1 to 4096 characters",
            ));
        }
        if !t.creation.iter().any(|s| s.contains("{{name}}")) {
            return Err(CoreError::field(
                "roles",
                "the creation statements must create the role {{name}}",
            ));
        }
        if t.default_ttl_secs < 60
            || t.default_ttl_secs > t.max_ttl_secs
            || secs(t.max_ttl_secs) > MAX_DYNAMIC_TTL
        {
            return Err(CoreError::field(
                "roles",
                "60 s ≤ default_ttl_secs ≤ max_ttl_secs ≤ 30 days",
            ));
        }
    }
    Ok(())
}

/// Replaces `{{name}}`, `{{password}}` and `{{expiration}}`. The values are Warden's own
/// (`[a-z0-9_]`, a SCRAM-SHA-256 verifier of a `[A-Za-z0-9]` password — base64 and `$:` — and
/// RFC 3339), so they are safe inside the template's quotes.
fn render(template: &str, name: &str, password: &str, expiration: &str) -> Zeroizing<String> {
    Zeroizing::new(
        template
            .replace("{{name}}", name)
            .replace("{{password}}", password)
            .replace("{{expiration}}", expiration),
    )
}

/// May `actor` manage (renew, revoke) `lease`?
fn may_manage_lease(
    store: &dyn ReadStore,
    actor: &Actor,
    lease: &VaultLease,
) -> Result<bool, CoreError> {
    if actor.is_admin() || lease.holder == actor.label() {
        return Ok(true);
    }
    if let Some(i) = lease.identity_id {
        if identity_of(actor) == Some(i) {
            return Ok(true);
        }
        if let Some(identity) = store.identity(i)? {
            return Ok(actor.can_manage_team(identity.owner_id));
        }
    }
    Ok(false)
}

fn may_see_lease(
    store: &dyn ReadStore,
    actor: &Actor,
    lease: &VaultLease,
) -> Result<bool, CoreError> {
    if actor.can_read_audit() || may_manage_lease(store, actor, lease)? {
        return Ok(true);
    }
    match lease.identity_id {
        Some(i) => Ok(store
            .identity(i)?
            .is_some_and(|x| actor.can_read_team(x.owner_id))),
        None => Ok(false),
    }
}

impl Registry {
    /// The admin login of a database connection secret (its password decrypted).
    pub(crate) fn database_login(
        &self,
        path: &str,
    ) -> Result<(Secret, DatabaseConnection, PgLogin), CoreError> {
        let keys = Arc::clone(&self.vault_parts()?.keys);
        let store = self.reader()?;
        let secret = store
            .secret(path)?
            .filter(|s| s.deleted_at.is_none())
            .ok_or_else(|| CoreError::NotFound(format!("database connection {path:?}")))?;
        let conn = secret.database.clone().ok_or_else(|| {
            CoreError::InvalidState(format!("{path:?} is not a database connection"))
        })?;
        let v = secret.current_version;
        let sealed = store
            .secret_envelope(path, v)?
            .ok_or_else(|| CoreError::NotFound(format!("the password of {path:?}")))?;
        let pw = open_value(&*keys, path, v, &sealed)?;
        let password = Zeroizing::new(
            std::str::from_utf8(&pw)
                .map_err(|_| CoreError::InvalidState("the stored password is not UTF-8".into()))?
                .to_owned(),
        );
        let login = PgLogin {
            host: conn.host.clone(),
            port: conn.port,
            dbname: conn.dbname.clone(),
            username: conn.username.clone(),
            password,
            tls: crate::ports::PgTls::of(&conn),
        };
        Ok((secret, conn, login))
    }

    /// Registers (or updates) a PostgreSQL connection as the secret `databases/<name>`, after
    /// checking that Warden can log in with it.
    pub async fn add_database(
        &self,
        actor: &Actor,
        req: AddDatabaseRequest,
    ) -> Result<Secret, CoreError> {
        check_database(&req)?;
        let parts = self.vault_parts()?;
        let (keys, targets) = (Arc::clone(&parts.keys), Arc::clone(&parts.targets));
        // Authorise before Warden connects anywhere on the caller's behalf.
        {
            let store = self.reader()?;
            let owner = resolve_identity(&*store, actor, &req.owner)?;
            let allowed = match &actor.principal {
                Principal::Operator { .. } | Principal::System => {
                    actor.can_manage_team(owner.owner_id)
                }
                _ => false,
            };
            if !allowed {
                return Err(CoreError::Forbidden(
                    "configuring a database needs an operator who manages the owner's team".into(),
                ));
            }
        }
        let login = PgLogin {
            host: req.host.clone(),
            port: req.port,
            dbname: req.dbname.clone(),
            username: req.username.clone(),
            password: Zeroizing::new(req.password.0.clone()),
            tls: if req.sslmode == "disable" {
                crate::ports::PgTls::Disable
            } else {
                crate::ports::PgTls::VerifyFull {
                    ca_pem: req.ca_pem.clone(),
                }
            },
        };
        targets
            .pg_check(&login, "SELECT 1")
            .await
            .map_err(|e| CoreError::InvalidState(format!("cannot use the connection: {e}")))?;
        let actor = actor.clone();
        let path = format!("{DATABASES}{}", req.name);
        self.write(move |tx, job| {
            let now = job.now();
            let target = secret_target(&path);
            let owner = match resolve_identity(tx, &actor, &req.owner) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            };
            let mut secret = match tx.secret(&path)? {
                Some(s) if s.database.is_none() => {
                    return Ok(Err(CoreError::AlreadyExists(format!(
                        "secret {path:?} exists and is not a database connection"
                    ))));
                }
                Some(s) => {
                    let moved = s.database.as_ref().is_some_and(|d| {
                        d.host != req.host || d.port != req.port || d.dbname != req.dbname
                    });
                    let active = LeaseFilter {
                        prefix: Some(format!("creds/{path}/")),
                        identity: None,
                        active_only: true,
                    };
                    if moved && !tx.list_vault_leases(&active, 1)?.is_empty() {
                        return Ok(Err(CoreError::InvalidState(
                            "logins issued on this connection are still live; revoke them \
                             (warden lease revoke-prefix) before pointing it elsewhere"
                                .into(),
                        )));
                    }
                    s
                }
                None => Secret {
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
                },
            };
            if !may_use(tx, &actor, &secret, "write")?
                || matches!(actor.principal, Principal::Identity { .. })
                    && secret.owner_id != owner.id
            {
                let e =
                    CoreError::Forbidden(format!("you may not configure the database {path:?}"));
                return Ok(Err(job.deny(tx, &actor, "database.add", target, e)?));
            }
            let version = append_version(
                tx,
                &*keys,
                &mut secret,
                req.password.0.as_bytes(),
                SecretVersionState::Current,
                actor.label(),
                None,
                now,
            )?;
            for v in secret.versions.iter_mut() {
                if v.version != version && v.state == SecretVersionState::Current {
                    v.state = SecretVersionState::Retired;
                }
            }
            secret.current_version = version;
            secret.owner_id = owner.id;
            secret.description = req.description.clone().unwrap_or_default();
            secret.database = Some(DatabaseConnection {
                host: req.host.clone(),
                port: req.port,
                dbname: req.dbname.clone(),
                username: req.username.clone(),
                sslmode: req.sslmode.clone(),
                ca_pem: req.ca_pem.clone(),
                roles: req.roles.clone(),
            });
            secret.deleted_at = None;
            secret.updated_at = now;
            super::vault::prune_versions(tx, &mut secret)?;
            tx.put_secret(&secret)?;
            job.record(
                tx,
                &actor,
                "database.add",
                target,
                AuditOutcome::Success,
                json!({ "host": req.host, "port": req.port, "dbname": req.dbname,
                        "username": req.username, "roles": req.roles.keys().collect::<Vec<_>>(),
                        "version": version }),
            )?;
            Ok(Ok(secret))
        })
        .await?
    }

    /// Creates a PostgreSQL login for this request from a role template, on a lease.
    pub async fn issue_postgres_creds(
        &self,
        actor: &Actor,
        req: PostgresCredsRequest,
    ) -> Result<PostgresCreds, CoreError> {
        check_role_template_name(&req.role)?;
        let path = match &req.database {
            Some(d) => {
                let p = format!("{DATABASES}{d}");
                check_path(&p)?;
                p
            }
            None => {
                let with_role: Vec<Secret> = self
                    .reader()?
                    .list_secrets(DATABASES, None, 1000)?
                    .into_iter()
                    .filter(|s| {
                        s.deleted_at.is_none()
                            && s.database
                                .as_ref()
                                .is_some_and(|d| d.roles.contains_key(&req.role))
                    })
                    .collect();
                match with_role.as_slice() {
                    [one] => one.path.clone(),
                    [] => {
                        return Err(CoreError::NotFound(format!(
                            "a database with the role {:?}",
                            req.role
                        )));
                    }
                    _ => {
                        return Err(CoreError::Ambiguous(format!(
                            "several databases have the role {:?}; name one with `database`",
                            req.role
                        )));
                    }
                }
            }
        };
        let db_name = path.trim_start_matches(DATABASES).to_owned();
        let (secret, conn, admin) = self.database_login(&path)?;
        let template = conn
            .roles
            .get(&req.role)
            .cloned()
            .ok_or_else(|| CoreError::NotFound(format!("role {:?} of {path:?}", req.role)))?;
        let ttl = match req.ttl_secs {
            None => secs(template.default_ttl_secs),
            Some(0) => return Err(CoreError::field("ttl_secs", "greater than zero")),
            Some(s) if s > template.max_ttl_secs => {
                return Err(CoreError::TtlTooLong(format!(
                    "ttl {s}s exceeds the role's maximum ({}s)",
                    template.max_ttl_secs
                )));
            }
            Some(s) => secs(s),
        };
        let needed = format!("creds:{db_name}/{}", req.role);
        let allowed = {
            let store = self.reader()?;
            let db_team = store.identity(secret.owner_id)?.map(|i| i.owner_id);
            match &actor.principal {
                // The scope, and the database belongs to the NHI's own team.
                Principal::Identity {
                    id, token_scopes, ..
                } => store.identity(*id)?.is_some_and(|i| {
                    i.status == warden_types::IdentityStatus::Active
                        && db_team == Some(i.owner_id)
                        && i.scopes.iter().any(|g| scope::covers(g, &needed))
                        && token_scopes
                            .as_ref()
                            .is_none_or(|t| t.iter().any(|g| scope::covers(g, &needed)))
                }),
                _ => may_use(&*store, actor, &secret, "write")?,
            }
        };
        let role_part: String = req
            .role
            .chars()
            .map(|c| if c == '-' { '_' } else { c })
            .take(20)
            .collect();
        let username = format!(
            "w_{role_part}_{}",
            &*warden_crypto::random_text(12, warden_crypto::LOWER_ALPHANUMERIC)
        );
        let password = warden_crypto::random_text(32, warden_crypto::ALPHANUMERIC);
        let lease_path = format!("creds/{path}/{}", req.role);
        let a = actor.clone();
        let (user, lp) = (username.clone(), lease_path.clone());
        let role = req.role.clone();
        let lease = self
            .write(move |tx, job| {
                let target = format!("creds:{lp}");
                if !allowed {
                    let e = CoreError::Forbidden(format!(
                        "issuing {role:?} credentials needs the scope {needed:?}"
                    ));
                    return Ok(Err(job.deny(tx, &a, "creds.issue", target, e)?));
                }
                let now = job.now();
                let lease = VaultLease {
                    id: Uuid::now_v7(),
                    kind: LeaseKind::Postgres,
                    path: lp,
                    identity_id: identity_of(&a),
                    holder: a.label(),
                    username: Some(user.clone()),
                    created_at: now,
                    expires_at: now + ttl,
                    max_expires_at: now + secs(template.max_ttl_secs),
                    revoked_at: None,
                    last_error: None,
                    retry_at: None,
                };
                tx.put_vault_lease(&lease)?;
                job.record(
                    tx,
                    &a,
                    "creds.issue",
                    lease_target(lease.id),
                    AuditOutcome::Success,
                    json!({ "database": path, "role": role, "username": user,
                            "expires_at": lease.expires_at.unix_timestamp() }),
                )?;
                Ok(Ok(lease))
            })
            .await??;
        let expiration = lease
            .expires_at
            .format(&Rfc3339)
            .map_err(|e| CoreError::InvalidState(e.to_string()))?;
        // The database gets the password's SCRAM verifier, never the password itself.
        let verifier = warden_crypto::scram_sha256_verifier(&password);
        let mut statements: Vec<Zeroizing<String>> = template
            .creation
            .iter()
            .map(|t| render(t, &username, &verifier, &expiration))
            .collect();
        // Whatever the template says, the login dies with its lease even if Warden is gone.
        statements.push(Zeroizing::new(format!(
            "ALTER ROLE \"{username}\" VALID UNTIL '{expiration}'"
        )));
        let targets = Arc::clone(&self.vault_parts()?.targets);
        if let Err(e) = targets.pg_execute(&admin, statements).await {
            // Nothing was created (one transaction): the lease ends here.
            let id = lease.id;
            let reason = e.clone();
            self.write(move |tx, job| {
                if let Some(mut l) = tx.vault_lease(id)? {
                    l.revoked_at = Some(job.now());
                    tx.put_vault_lease(&l)?;
                }
                job.record(
                    tx,
                    &Actor::system("vault"),
                    "creds.issue",
                    lease_target(id),
                    AuditOutcome::Failure,
                    json!({ "reason": reason }),
                )?;
                Ok(())
            })
            .await?;
            return Err(CoreError::InvalidState(format!(
                "creating the login failed: {e}"
            )));
        }
        Ok(PostgresCreds {
            host: conn.host,
            port: conn.port,
            dbname: conn.dbname,
            username,
            password: SecretText(password.to_string()),
            lease,
        })
    }

    /// Leases the actor may see, matching `filter`.
    pub fn list_leases(
        &self,
        actor: &Actor,
        filter: &LeaseFilter,
        limit: usize,
    ) -> Result<Vec<VaultLease>, CoreError> {
        let store = self.reader()?;
        let mut out = Vec::new();
        for l in store.list_vault_leases(filter, 10_000)? {
            if may_see_lease(&*store, actor, &l)? {
                out.push(l);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Extends a lease by `ttl` from now (default: its original length), never past its maximum.
    /// A PostgreSQL login's `VALID UNTIL` moves first, so the record never promises more than
    /// the database allows.
    pub async fn renew_lease(
        &self,
        actor: &Actor,
        id: Uuid,
        ttl_secs: Option<u64>,
    ) -> Result<VaultLease, CoreError> {
        let lease = {
            let store = self.reader()?;
            match store.vault_lease(id)? {
                Some(l) if may_manage_lease(&*store, actor, &l)? => l,
                Some(l) if may_see_lease(&*store, actor, &l)? => {
                    return Err(CoreError::Forbidden("you may not renew this lease".into()));
                }
                _ => return Err(CoreError::NotFound(format!("lease {id}"))),
            }
        };
        let now = self.now();
        if lease.revoked_at.is_some() || lease.expires_at <= now {
            return Err(CoreError::InvalidState(
                "the lease has ended; ask for a new one".into(),
            ));
        }
        let ttl = match ttl_secs {
            Some(0) => return Err(CoreError::field("ttl_secs", "greater than zero")),
            Some(s) => secs(s),
            None => lease.expires_at - lease.created_at,
        };
        let new_expiry = std::cmp::min(now + ttl, lease.max_expires_at);
        if lease.kind == LeaseKind::Postgres
            && let (Some(user), Some((db, _))) = (&lease.username, split_creds_path(&lease.path))
        {
            let (_, _, admin) = self.database_login(db)?;
            let until = new_expiry
                .format(&Rfc3339)
                .map_err(|e| CoreError::InvalidState(e.to_string()))?;
            let stmt = Zeroizing::new(format!("ALTER ROLE \"{user}\" VALID UNTIL '{until}'"));
            let targets = Arc::clone(&self.vault_parts()?.targets);
            targets
                .pg_execute(&admin, vec![stmt])
                .await
                .map_err(|e| CoreError::InvalidState(format!("extending the login failed: {e}")))?;
        }
        let a = actor.clone();
        self.write(move |tx, job| {
            let target = lease_target(id);
            let Some(mut l) = tx.vault_lease(id)? else {
                return Ok(Err(CoreError::NotFound(format!("lease {id}"))));
            };
            if !may_manage_lease(tx, &a, &l)? {
                let e = CoreError::Forbidden("you may not renew this lease".into());
                return Ok(Err(job.deny(tx, &a, "lease.renew", target, e)?));
            }
            if l.revoked_at.is_some() || l.expires_at <= job.now() {
                return Ok(Err(CoreError::InvalidState("the lease has ended".into())));
            }
            l.expires_at = new_expiry;
            tx.put_vault_lease(&l)?;
            job.record(
                tx,
                &a,
                "lease.renew",
                target,
                AuditOutcome::Success,
                json!({ "expires_at": new_expiry.unix_timestamp() }),
            )?;
            Ok(Ok(l))
        })
        .await?
    }

    /// Revokes a lease now: the record first (so it is revoked even if the target is down), then
    /// the target (a PostgreSQL login is dropped); a target failure is retried by the sweeper.
    pub async fn revoke_lease(&self, actor: &Actor, id: Uuid) -> Result<VaultLease, CoreError> {
        let a = actor.clone();
        let lease = self
            .write(move |tx, job| {
                let target = lease_target(id);
                let Some(mut l) = tx.vault_lease(id)? else {
                    return Ok(Err(CoreError::NotFound(format!("lease {id}"))));
                };
                if !may_manage_lease(tx, &a, &l)? {
                    if !may_see_lease(tx, &a, &l)? {
                        return Ok(Err(CoreError::NotFound(format!("lease {id}"))));
                    }
                    let e = CoreError::Forbidden("you may not revoke this lease".into());
                    return Ok(Err(job.deny(tx, &a, "lease.revoke", target, e)?));
                }
                if l.revoked_at.is_some() {
                    return Ok(Ok(l));
                }
                mark_revoked(&mut l, job.now());
                tx.put_vault_lease(&l)?;
                job.record(
                    tx,
                    &a,
                    "lease.revoke",
                    target,
                    AuditOutcome::Success,
                    json!({ "path": l.path }),
                )?;
                Ok(Ok(l))
            })
            .await??;
        Ok(self.clean_up_lease(lease).await)
    }

    /// Revokes every active lease whose path starts with `prefix` (admins).
    pub async fn revoke_lease_prefix(
        &self,
        actor: &Actor,
        prefix: &str,
    ) -> Result<LeasesRevoked, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "revoking leases by prefix needs the admin role".into(),
            ));
        }
        if prefix.is_empty() || prefix.len() > 512 {
            return Err(CoreError::field("prefix", "1 to 512 characters"));
        }
        let filter = LeaseFilter {
            prefix: Some(prefix.to_owned()),
            identity: None,
            active_only: true,
        };
        let mut out = LeasesRevoked {
            revoked: 0,
            failed: 0,
        };
        loop {
            let batch = self.reader()?.list_vault_leases(&filter, 200)?;
            if batch.is_empty() {
                break;
            }
            for l in batch {
                let l = self.revoke_lease(actor, l.id).await?;
                if l.last_error.is_some() {
                    out.failed += 1;
                } else {
                    out.revoked += 1;
                }
            }
        }
        Ok(out)
    }

    /// Does the target's part of a revoked lease and records the outcome: `last_error` cleared on
    /// success, set (and the lease left due) on failure.
    async fn clean_up_lease(&self, lease: VaultLease) -> VaultLease {
        if lease.last_error.is_none() {
            return lease;
        }
        let result = match (lease.kind, &lease.username, split_creds_path(&lease.path)) {
            (LeaseKind::Postgres, Some(user), Some((db, role))) => match self.database_login(db) {
                Ok((_, conn, admin)) => {
                    let revocation = conn
                        .roles
                        .get(role)
                        .map(|t| t.revocation.clone())
                        .unwrap_or_default();
                    match self.vault_parts() {
                        Ok(p) => {
                            let targets = Arc::clone(&p.targets);
                            targets.pg_drop_role(&admin, user, revocation).await
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            },
            _ => Ok(()),
        };
        let id = lease.id;
        let error = result.err();
        let e2 = error.clone();
        let written = self
            .write(move |tx, job| {
                let Some(mut l) = tx.vault_lease(id)? else {
                    return Ok(None);
                };
                l.last_error = e2.clone();
                // A target that keeps failing is retried a minute later, so it never holds up
                // the leases that expire meanwhile.
                l.retry_at = e2.as_ref().map(|_| job.now() + Duration::minutes(1));
                tx.put_vault_lease(&l)?;
                job.record(
                    tx,
                    &Actor::system("vault"),
                    "lease.cleanup",
                    lease_target(id),
                    if e2.is_some() {
                        AuditOutcome::Failure
                    } else {
                        AuditOutcome::Success
                    },
                    json!({ "username": l.username, "error": e2 }),
                )?;
                Ok(Some(l))
            })
            .await;
        match written {
            Ok(Some(l)) => l,
            _ => VaultLease {
                last_error: error.or(lease.last_error),
                ..lease
            },
        }
    }

    /// Finishes the revocations of an identity's leases at their targets (after it retired).
    pub(crate) async fn clean_up_leases_of(&self, identity: Uuid) {
        let filter = LeaseFilter {
            prefix: None,
            identity: Some(identity),
            active_only: false,
        };
        let Ok(leases) = self
            .reader()
            .and_then(|r| Ok(r.list_vault_leases(&filter, 10_000)?))
        else {
            return;
        };
        for l in leases {
            if l.revoked_at.is_some() && l.last_error.is_some() {
                self.clean_up_lease(l).await;
            }
        }
    }

    /// Ends expired leases and retries failed revocations (the jobs leader, every few seconds).
    /// Returns how many leases were handled.
    pub async fn sweep_leases(&self) -> Result<usize, CoreError> {
        let now = self.now();
        let due = self.reader()?.vault_leases_due(now, 100)?;
        let mut n = 0;
        for lease in due {
            let lease = if lease.revoked_at.is_none() {
                let id = lease.id;
                let ended = self
                    .write_as_leader(move |tx, job| {
                        let Some(mut l) = tx.vault_lease(id)? else {
                            return Ok(None);
                        };
                        if l.revoked_at.is_some() || l.expires_at > job.now() {
                            return Ok(None);
                        }
                        mark_revoked(&mut l, job.now());
                        tx.put_vault_lease(&l)?;
                        job.record(
                            tx,
                            &Actor::system("vault"),
                            "lease.expire",
                            lease_target(id),
                            AuditOutcome::Success,
                            json!({ "path": l.path }),
                        )?;
                        Ok(Some(l))
                    })
                    .await?;
                match ended {
                    Some(l) => l,
                    None => continue,
                }
            } else {
                lease
            };
            let done = self.clean_up_lease(lease).await;
            if done.last_error.is_some() {
                tracing::warn!(lease = %done.id, "revoking a lease at its target failed; will retry");
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Marks a lease revoked; one whose target has work left (a login to drop) stays due until the
/// target confirms.
pub(crate) fn mark_revoked(l: &mut VaultLease, now: time::OffsetDateTime) {
    l.revoked_at = Some(now);
    if l.kind == LeaseKind::Postgres {
        l.last_error = Some("revocation at the database pending".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_paths_split_at_the_role() {
        assert_eq!(
            split_creds_path("creds/databases/main/read-only"),
            Some(("databases/main", "read-only"))
        );
        assert_eq!(split_creds_path("secrets/a"), None);
    }

    #[test]
    fn templates_render_warden_values_only() {
        let r = render(
            "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
            "w_ro_abc",
            "Pw1",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            r.as_str(),
            "CREATE ROLE \"w_ro_abc\" LOGIN PASSWORD 'Pw1' VALID UNTIL '2026-01-01T00:00:00Z'"
        );
    }
}
