//! The vault: secrets that must still exist, their versions, rotation, leases and dynamic
//! database credentials. Plaintext appears only in [`SecretText`], whose `Debug` is redacted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A secret value on the wire. `Debug` never shows it; it is zeroized when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText([redacted])")
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

str_enum! {
    /// Where a version of a secret stands.
    SecretVersionState {
        /// Written to the vault; the target (database, webhook) may or may not have it yet.
        Pending => "pending",
        /// What readers get.
        Current => "current",
        /// Replaced, still valid at the target until `retire_at` (rotation overlap).
        Previous => "previous",
        /// No longer valid; kept (encrypted) for history.
        Retired => "retired",
        /// A rotation that did not pass its health check (rolled back).
        Failed => "failed",
        /// Its ciphertext was erased.
        Destroyed => "destroyed",
    }
}

str_enum! {
    /// What a lease is on.
    LeaseKind {
        /// A secret read that asked for a lease.
        Read => "read",
        /// A PostgreSQL login created for one request.
        Postgres => "postgres",
    }
}

/// One version's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretVersion {
    pub version: u32,
    pub state: SecretVersionState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    /// Master key the version's data key is wrapped under.
    pub key_id: String,
    /// End of the rotation overlap for a `previous` version.
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub retire_at: Option<OffsetDateTime>,
    /// For a database account rotated in turn: which account this version belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// How a secret is rotated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rotator {
    /// A fresh random value (URL-safe, `length` characters) that clients read from Warden.
    Random {
        #[serde(default = "default_random_length")]
        length: u32,
    },
    /// A PostgreSQL login role of a configured database connection. With two accounts, Warden
    /// rotates them in turn (the one not in use gets the new password and becomes current), so a
    /// client holding the previous value keeps logging in during the overlap.
    Postgres {
        /// Path of the database connection secret.
        database: String,
        accounts: Vec<String>,
        /// Health check run as the account with its new password (default `SELECT 1`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check_sql: Option<String>,
    },
    /// A Warden credential of an identity: a new API key is issued and the old one revoked when the
    /// overlap ends.
    WardenCredential {
        /// The identity (id or ENV/NAME).
        identity: String,
    },
    /// The user's endpoint: Warden POSTs a signed request with the new value (or takes the value
    /// the endpoint returns), then checks it at `check_url` if given.
    Webhook {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check_url: Option<String>,
    },
}

pub fn default_sslmode() -> String {
    "verify-full".into()
}

fn default_random_length() -> u32 {
    40
}

/// When and how a secret rotates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicy {
    pub rotator: Rotator,
    /// Rotate this often (seconds). `0` = only on demand (or by `schedule`).
    #[serde(default)]
    pub every_secs: u64,
    /// Or at these times: a five-field cron expression in UTC (`0 3 * * 0`: Sundays 03:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long the replaced value stays valid (seconds).
    #[serde(default)]
    pub overlap_secs: u64,
    /// Dependents told (signed POST) after each rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

/// A PostgreSQL server Warden creates logins on. Its admin password is the secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConnection {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    /// The role Warden logs in as to manage roles (needs CREATEROLE).
    pub username: String,
    /// TLS to the database: `verify-full` (default: encrypted, the certificate verified against
    /// the system's roots and `ca_pem`, for `host`) or `disable`.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// PEM CA certificates trusted for this database, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Role templates by name.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleTemplate>,
}

/// SQL run to create (and drop) a dynamic login. Placeholders: `{{name}}`, `{{password}}`,
/// `{{expiration}}` (Warden generates all three; names and passwords use only `[a-z0-9_]` and
/// `[A-Za-z0-9]`, so they need no escaping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleTemplate {
    pub creation: Vec<String>,
    /// Run before the role is dropped (after its sessions are ended and what it owns is dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocation: Vec<String>,
    pub default_ttl_secs: u64,
    pub max_ttl_secs: u64,
}

/// A secret's metadata, as listed and stored (never its value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub id: Uuid,
    pub path: String,
    /// The identity that owns it (its team manages it).
    pub owner_id: Uuid,
    #[serde(default)]
    pub description: String,
    /// The version readers get (0 while none is current).
    pub current_version: u32,
    pub versions: Vec<SecretVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicy>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_rotation_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseConnection>,
    /// A pending version the target could not be asked about is tried again at this time.
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
}

impl Secret {
    pub fn version(&self, v: u32) -> Option<&SecretVersion> {
        self.versions.iter().find(|x| x.version == v)
    }

    pub fn version_mut(&mut self, v: u32) -> Option<&mut SecretVersion> {
        self.versions.iter_mut().find(|x| x.version == v)
    }

    pub fn latest_version(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0)
    }

    /// When the vault next has work on this secret: a pending version to settle (at once), an
    /// overlap to end, or a scheduled rotation. `None` when nothing is due ever.
    pub fn due_at(&self) -> Option<OffsetDateTime> {
        let pending = self
            .versions
            .iter()
            .filter(|v| v.state == SecretVersionState::Pending)
            .map(|v| v.created_at.max(self.retry_at.unwrap_or(v.created_at)));
        let overlaps = self
            .versions
            .iter()
            .filter(|v| v.state == SecretVersionState::Previous)
            .filter_map(|v| v.retire_at);
        let rotation = if self.deleted_at.is_none() {
            self.next_rotation_at
        } else {
            None
        };
        pending.chain(overlaps).chain(rotation).min()
    }
}

impl VaultLease {
    /// When the target has work for this lease: its expiry while active, at once once revoked
    /// with the target not yet cleaned up; `None` when done.
    pub fn due_at(&self) -> Option<OffsetDateTime> {
        match (self.revoked_at, &self.last_error) {
            (None, _) => Some(self.expires_at),
            (Some(at), Some(_)) => Some(self.retry_at.unwrap_or(at)),
            (Some(_), None) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretPage {
    pub items: Vec<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A lease: a dynamic credential or a leased read, revoked when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VaultLease {
    pub id: Uuid,
    pub kind: LeaseKind,
    /// `secrets/<path>` or `creds/<database path>/<role>`: what revoke-by-prefix matches.
    pub path: String,
    /// The identity it was issued to, if an NHI asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    /// Who asked (an audit actor label).
    pub holder: String,
    /// The PostgreSQL login of a `postgres` lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Renewals never go past this.
    #[serde(with = "time::serde::rfc3339")]
    pub max_expires_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why the last revocation attempt at the target failed (retried by the sweeper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the sweeper tries that revocation again.
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeasePage {
    pub items: Vec<VaultLease>,
}

/// `PUT /v1/secrets/{path}`: a new version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    pub value: SecretText,
    /// Owning identity (id or ENV/NAME); required when the secret is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicy>,
    /// Check-and-set: write only if the latest version is this one (0 = the secret must not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas: Option<u32>,
}

/// A secret's value as read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretRead {
    pub path: String,
    pub version: u32,
    pub value: SecretText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<VaultLease>,
}

/// `POST /v1/vault/databases`: a PostgreSQL connection for dynamic credentials and rotation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDatabaseRequest {
    /// Stored as the secret `databases/<name>`.
    pub name: String,
    pub owner: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub username: String,
    pub password: SecretText,
    /// `verify-full` (default) or `disable`.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleTemplate>,
}

/// `POST /v1/creds/postgres`: a login created for this request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresCredsRequest {
    pub role: String,
    /// Database name (`databases/<name>`); may be left out when one database has the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A dynamic PostgreSQL login.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PostgresCreds {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub username: String,
    pub password: SecretText,
    pub lease: VaultLease,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLeaseRequest {
    /// New time to live from now (seconds); capped by the lease's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokePrefixRequest {
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeasesRevoked {
    pub revoked: u64,
    /// Leases whose target could not be reached: marked revoked, retried by the sweeper.
    pub failed: u64,
}

/// Result of one rotation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationOutcome {
    pub path: String,
    /// `rotated`, or `rolled_back` (the health check failed; a finding was raised).
    pub result: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Result of `POST /v1/vault/rewrap`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RewrapReport {
    /// The master key every data key is now wrapped under.
    pub key_id: String,
    pub rewrapped: u64,
    /// Versions still under another key (when the request stopped at its limit).
    pub remaining: u64,
}
