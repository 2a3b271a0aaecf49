//! Embedded migrations. Never edit a released migration: append a new one.

use rusqlite::{Connection, OptionalExtension};
use warden_core::StoreError;

use crate::db_err;

/// Migrations in order; the schema version is the number applied.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE teams (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE operators (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    disabled_at INTEGER
);
CREATE TABLE team_members (
    team_id BLOB NOT NULL REFERENCES teams(id),
    operator_id BLOB NOT NULL REFERENCES operators(id),
    PRIMARY KEY (team_id, operator_id)
) WITHOUT ROWID;
CREATE INDEX team_members_operator ON team_members(operator_id);
CREATE TABLE identities (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    environment TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner_id BLOB NOT NULL REFERENCES teams(id),
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    scopes TEXT NOT NULL,
    privileged INTEGER NOT NULL,
    audiences TEXT NOT NULL,
    constraints TEXT NOT NULL,
    labels TEXT NOT NULL,
    parent_id BLOB REFERENCES identities(id),
    origin TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at INTEGER,
    UNIQUE (environment, name)
);
CREATE INDEX identities_name ON identities(name);
CREATE INDEX identities_owner ON identities(owner_id, id);
CREATE INDEX identities_kind ON identities(kind, id);
CREATE INDEX identities_status ON identities(status, id);
CREATE INDEX identities_env ON identities(environment, id);
CREATE INDEX identities_privileged ON identities(privileged, id);
CREATE INDEX identities_expires ON identities(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE identity_labels (
    identity_id BLOB NOT NULL REFERENCES identities(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (identity_id, key)
) WITHOUT ROWID;
CREATE INDEX identity_labels_kv ON identity_labels(key, value, identity_id);
CREATE TABLE credentials (
    id BLOB PRIMARY KEY,
    identity_id BLOB NOT NULL REFERENCES identities(id),
    kind TEXT NOT NULL,
    secret_hash BLOB UNIQUE,
    hint TEXT NOT NULL,
    description TEXT,
    thumbprint TEXT,
    public_jwk TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER,
    revoke_reason TEXT,
    rotated_from BLOB,
    replaced_by BLOB,
    created_by TEXT NOT NULL
);
CREATE INDEX credentials_identity ON credentials(identity_id);
CREATE INDEX credentials_overlap ON credentials(expires_at)
    WHERE replaced_by IS NOT NULL AND revoked_at IS NULL;
CREATE TABLE change_requests (
    id BLOB PRIMARY KEY,
    identity_id BLOB NOT NULL REFERENCES identities(id),
    kind TEXT NOT NULL,
    scopes TEXT NOT NULL,
    privileged_scopes TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requester_id BLOB NOT NULL,
    requested_at INTEGER NOT NULL,
    decided_by TEXT,
    decided_at INTEGER,
    decision_reason TEXT
);
CREATE INDEX change_requests_status ON change_requests(status, id);
CREATE INDEX change_requests_identity ON change_requests(identity_id);
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    time_us INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX audit_target ON audit_events(target, seq);
CREATE INDEX audit_actor ON audit_events(actor, seq);
CREATE INDEX audit_action ON audit_events(action, seq);
CREATE TABLE audit_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    mac BLOB NOT NULL
);
"#,
    // v2: who may lift a suspension.
    r#"
ALTER TABLE identities ADD COLUMN suspended_by_admin INTEGER NOT NULL DEFAULT 0;
-- Who suspended them before is unknown: fail safe, only an admin lifts an existing suspension.
UPDATE identities SET suspended_by_admin = 1 WHERE status = 'suspended';
-- Who created each operator: an admin may not enable an admin it created (four eyes).
ALTER TABLE operators ADD COLUMN created_by BLOB;
"#,
    // v3: the token service.
    r#"
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    activates_at INTEGER NOT NULL,
    retires_at INTEGER,
    expires_at INTEGER
);
-- Single-use values (client assertion and DPoP proof jti), keyed-hashed, kept until they expire.
CREATE TABLE token_jtis (
    jti_hash BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX token_jtis_expiry ON token_jtis(expires_at);
-- Access tokens revoked before their expiry (RFC 7009).
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    identity_id BLOB NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX revoked_tokens_expiry ON revoked_tokens(expires_at);
"#,
    // v4: single-use values keyed in time order (their expiry first), so inserts land at the end
    // of the tree instead of at random pages, and the purge is a range delete.
    r#"
CREATE TABLE token_once (
    keep_until INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (keep_until, hash)
) WITHOUT ROWID;
INSERT INTO token_once (keep_until, hash) SELECT expires_at, jti_hash FROM token_jtis;
DROP TABLE token_jtis;
"#,
    // v5: leases on cluster-wide jobs (one holder at a time, fenced).
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    fence INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // v6: findings of `warden scan --report-to`, deduplicated by fingerprint.
    r#"
CREATE TABLE findings (
    id BLOB PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    repository TEXT,
    path TEXT NOT NULL,
    line INTEGER NOT NULL,
    commit_id TEXT,
    author TEXT,
    email TEXT,
    preview TEXT NOT NULL,
    suggested_owner TEXT,
    identity_id BLOB,
    identity_name TEXT,
    owner_name TEXT,
    credential_id BLOB,
    action TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    reported_by TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    times_seen INTEGER NOT NULL
);
CREATE INDEX findings_status ON findings(status, id);
"#,
    // v7: the vault. Metadata as the exact JSON written; values only as envelopes (a data key
    // wrapped by a master key that is not in the database, and the ciphertext under it).
    r#"
CREATE TABLE secrets (
    path TEXT PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    owner_id BLOB NOT NULL,
    due_at INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX secrets_due ON secrets(due_at) WHERE due_at IS NOT NULL;
CREATE TABLE secret_versions (
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (path, version)
) WITHOUT ROWID;
CREATE INDEX secret_versions_key ON secret_versions(key_id);
CREATE TABLE vault_leases (
    id BLOB PRIMARY KEY,
    path TEXT NOT NULL,
    identity_id BLOB,
    revoked INTEGER NOT NULL,
    due_at INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX vault_leases_due ON vault_leases(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX vault_leases_path ON vault_leases(path);
CREATE INDEX vault_leases_identity ON vault_leases(identity_id) WHERE identity_id IS NOT NULL;
"#,
    // v8: federation: trusted OIDC issuers and the trust rules mapping their tokens to NHIs.
    r#"
CREATE TABLE trusted_issuers (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    issuer TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
CREATE TABLE trust_rules (
    id BLOB PRIMARY KEY,
    issuer_id BLOB NOT NULL,
    identity_id BLOB NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX trust_rules_issuer ON trust_rules(issuer_id, id);
CREATE INDEX trust_rules_identity ON trust_rules(identity_id, id);
CREATE TABLE delegations (
    id BLOB PRIMARY KEY,
    agent_id BLOB NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX delegations_agent ON delegations(agent_id, id);
CREATE TABLE mcp_servers (
    identity_id BLOB PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
"#,
    // v9: governance: hygiene findings' evidence and proposal, usage aggregates, job state.
    r#"
ALTER TABLE findings ADD COLUMN evidence TEXT;
ALTER TABLE findings ADD COLUMN proposal TEXT;
CREATE INDEX findings_kind ON findings(kind, id);
CREATE TABLE usage_scopes (
    identity_id BLOB NOT NULL,
    scope TEXT NOT NULL,
    last_used INTEGER NOT NULL,
    PRIMARY KEY (identity_id, scope)
) WITHOUT ROWID;
CREATE TABLE usage_sources (
    credential_id BLOB NOT NULL,
    network TEXT NOT NULL,
    identity_id BLOB NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (credential_id, network)
) WITHOUT ROWID;
CREATE TABLE job_states (
    job TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE review_campaigns (
    id BLOB PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE review_items (
    campaign_id BLOB NOT NULL,
    identity_id BLOB NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (campaign_id, identity_id)
) WITHOUT ROWID;
"#,
    // v10: usage anomaly baselines (per node), audit sink cursors.
    r#"
CREATE TABLE anomaly_baselines (
    node TEXT NOT NULL,
    identity_id BLOB NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (node, identity_id)
) WITHOUT ROWID;
CREATE TABLE sink_cursors (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
];

/// The schema version this binary writes.
pub fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

fn current(conn: &Connection) -> Result<u32, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .map_err(db_err)?;
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    match v {
        None => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("schema_version {s:?} is not a number"))),
    }
}

/// The schema version of a database, without changing it.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    current(conn)
}

/// Applies pending migrations in one transaction; refuses a database newer than this binary.
/// Returns `(from, to)`.
pub fn migrate(conn: &mut Connection) -> Result<(u32, u32), StoreError> {
    let from = current(conn)?;
    let to = latest();
    if from > to {
        return Err(StoreError::Schema(format!(
            "the database has schema version {from}, newer than this binary knows ({to}); upgrade warden"
        )));
    }
    if from == to {
        return Ok((from, to));
    }
    let tx = conn.transaction().map_err(db_err)?;
    for sql in &MIGRATIONS[from as usize..] {
        tx.execute_batch(sql).map_err(db_err)?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [to.to_string()],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok((from, to))
}
