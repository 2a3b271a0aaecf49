//! Embedded migrations for PostgreSQL. Never edit a released migration: append a new one.
//!
//! The schema mirrors SQLite's (`warden-store-sqlite::schema`) in PostgreSQL's types: ids are
//! `uuid`, times integer microseconds (`bigint`, as the audit chain hashes them), secrets' hashes
//! and chain hashes `bytea`, JSON kept as the exact text written (`text`, not `jsonb`, which would
//! reorder keys). Its version numbers are its own.

use warden_core::StoreError;

use crate::{Conn, db_err};

/// Advisory-lock key that serialises migrations between nodes starting together.
const MIGRATION_LOCK: i64 = 0x5741_5244_4e00_0001;

/// Migrations in order; the schema version is the number applied.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE teams (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    description text,
    created_at bigint NOT NULL
);
CREATE TABLE operators (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    role text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    disabled_at bigint,
    created_by uuid
);
CREATE TABLE team_members (
    team_id uuid NOT NULL REFERENCES teams(id),
    operator_id uuid NOT NULL REFERENCES operators(id),
    PRIMARY KEY (team_id, operator_id)
);
CREATE INDEX team_members_operator ON team_members(operator_id);
CREATE TABLE identities (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    environment text NOT NULL,
    kind text NOT NULL,
    owner_id uuid NOT NULL REFERENCES teams(id),
    purpose text NOT NULL,
    status text NOT NULL,
    status_reason text,
    scopes text NOT NULL,
    privileged boolean NOT NULL,
    audiences text NOT NULL,
    constraints text NOT NULL,
    labels text NOT NULL,
    parent_id uuid REFERENCES identities(id),
    origin text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    last_used_at bigint,
    expires_at bigint,
    suspended_by_admin boolean NOT NULL DEFAULT false,
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
    identity_id uuid NOT NULL REFERENCES identities(id),
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (identity_id, key)
);
CREATE INDEX identity_labels_kv ON identity_labels(key, value, identity_id);
CREATE TABLE credentials (
    id uuid PRIMARY KEY,
    identity_id uuid NOT NULL REFERENCES identities(id),
    kind text NOT NULL,
    secret_hash bytea UNIQUE,
    hint text NOT NULL,
    description text,
    thumbprint text,
    public_jwk text,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    last_used_at bigint,
    revoked_at bigint,
    revoke_reason text,
    rotated_from uuid,
    replaced_by uuid,
    created_by text NOT NULL
);
CREATE INDEX credentials_identity ON credentials(identity_id);
CREATE INDEX credentials_overlap ON credentials(expires_at)
    WHERE replaced_by IS NOT NULL AND revoked_at IS NULL;
CREATE TABLE change_requests (
    id uuid PRIMARY KEY,
    identity_id uuid NOT NULL REFERENCES identities(id),
    kind text NOT NULL,
    scopes text NOT NULL,
    privileged_scopes text NOT NULL,
    status text NOT NULL,
    requested_by text NOT NULL,
    requester_id uuid NOT NULL,
    requested_at bigint NOT NULL,
    decided_by text,
    decided_at bigint,
    decision_reason text
);
CREATE INDEX change_requests_status ON change_requests(status, id);
CREATE INDEX change_requests_identity ON change_requests(identity_id);
CREATE TABLE audit_events (
    seq bigint PRIMARY KEY,
    time_us bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    outcome text NOT NULL,
    request_id text NOT NULL,
    source text NOT NULL,
    details text NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL
);
CREATE INDEX audit_target ON audit_events(target, seq);
CREATE INDEX audit_actor ON audit_events(actor, seq);
CREATE INDEX audit_action ON audit_events(action, seq);
CREATE TABLE audit_checkpoint (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    mac bytea NOT NULL
);
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    public_jwk text NOT NULL,
    sealed_key bytea NOT NULL,
    created_at bigint NOT NULL,
    activates_at bigint NOT NULL,
    retires_at bigint,
    expires_at bigint
);
CREATE TABLE token_once (
    keep_until bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (keep_until, hash)
);
CREATE TABLE revoked_tokens (
    jti text PRIMARY KEY,
    identity_id uuid NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens(expires_at);
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    fence bigint NOT NULL,
    expires_at bigint NOT NULL
);
"#,
    // v2: findings of `warden scan --report-to`, deduplicated by fingerprint.
    r#"
CREATE TABLE findings (
    id uuid PRIMARY KEY,
    fingerprint text NOT NULL UNIQUE,
    kind text NOT NULL,
    rule text NOT NULL,
    severity text NOT NULL,
    repository text,
    path text NOT NULL,
    line bigint NOT NULL,
    commit_id text,
    author text,
    email text,
    preview text NOT NULL,
    suggested_owner text,
    identity_id uuid,
    identity_name text,
    owner_name text,
    credential_id uuid,
    action text,
    status text NOT NULL,
    status_reason text,
    reported_by text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    times_seen bigint NOT NULL
);
CREATE INDEX findings_status ON findings(status, id);
"#,
    // v3: the vault. Metadata as the exact JSON written; values only as envelopes.
    r#"
CREATE TABLE secrets (
    path text PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    owner_id uuid NOT NULL,
    due_at bigint,
    doc text NOT NULL
);
CREATE INDEX secrets_due ON secrets(due_at) WHERE due_at IS NOT NULL;
CREATE TABLE secret_versions (
    path text NOT NULL,
    version bigint NOT NULL,
    key_id text NOT NULL,
    wrapped_key bytea NOT NULL,
    ciphertext bytea NOT NULL,
    PRIMARY KEY (path, version)
);
CREATE INDEX secret_versions_key ON secret_versions(key_id);
CREATE TABLE vault_leases (
    id uuid PRIMARY KEY,
    path text NOT NULL,
    identity_id uuid,
    revoked boolean NOT NULL,
    due_at bigint,
    doc text NOT NULL
);
CREATE INDEX vault_leases_due ON vault_leases(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX vault_leases_path ON vault_leases(path text_pattern_ops);
CREATE INDEX vault_leases_identity ON vault_leases(identity_id) WHERE identity_id IS NOT NULL;
"#,
    // v4: federation: trusted OIDC issuers and trust rules.
    r#"
CREATE TABLE trusted_issuers (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    issuer text NOT NULL UNIQUE,
    doc text NOT NULL
);
CREATE TABLE trust_rules (
    id uuid PRIMARY KEY,
    issuer_id uuid NOT NULL,
    identity_id uuid NOT NULL,
    doc text NOT NULL
);
CREATE INDEX trust_rules_issuer ON trust_rules(issuer_id, id);
CREATE INDEX trust_rules_identity ON trust_rules(identity_id, id);
CREATE TABLE delegations (
    id uuid PRIMARY KEY,
    agent_id uuid NOT NULL,
    doc text NOT NULL
);
CREATE INDEX delegations_agent ON delegations(agent_id, id);
CREATE TABLE mcp_servers (
    identity_id uuid PRIMARY KEY,
    doc text NOT NULL
);
CREATE TABLE policies (
    name text PRIMARY KEY,
    doc text NOT NULL
);
"#,
    // v5: governance: hygiene findings' evidence and proposal, usage aggregates, job state.
    r#"
ALTER TABLE findings ADD COLUMN evidence text;
ALTER TABLE findings ADD COLUMN proposal text;
CREATE INDEX findings_kind ON findings(kind, id);
CREATE TABLE usage_scopes (
    identity_id uuid NOT NULL,
    scope text NOT NULL,
    last_used bigint NOT NULL,
    PRIMARY KEY (identity_id, scope)
);
CREATE TABLE usage_sources (
    credential_id uuid NOT NULL,
    network text NOT NULL,
    identity_id uuid NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (credential_id, network)
);
CREATE TABLE job_states (
    job text PRIMARY KEY,
    doc text NOT NULL
);
CREATE TABLE review_campaigns (
    id uuid PRIMARY KEY,
    doc text NOT NULL
);
CREATE TABLE review_items (
    campaign_id uuid NOT NULL,
    identity_id uuid NOT NULL,
    doc text NOT NULL,
    PRIMARY KEY (campaign_id, identity_id)
);
"#,
    // v6: usage anomaly baselines (per node), audit sink cursors.
    r#"
CREATE TABLE anomaly_baselines (
    node text NOT NULL,
    identity_id uuid NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (node, identity_id)
);
CREATE TABLE sink_cursors (
    sink text PRIMARY KEY,
    seq bigint NOT NULL,
    updated_at bigint NOT NULL
);
"#,
];

/// The schema version this binary writes.
pub fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// The schema version of a database, without changing it.
pub fn version(conn: &Conn) -> Result<u32, StoreError> {
    let exists = conn
        .query("SELECT to_regclass('warden_meta') IS NOT NULL", &[])?
        .first()
        .map(|r| r.try_get::<_, bool>(0))
        .transpose()
        .map_err(db_err)?
        .unwrap_or(false);
    if !exists {
        return Ok(0);
    }
    let rows = conn.query(
        "SELECT value FROM warden_meta WHERE key = 'schema_version'",
        &[],
    )?;
    match rows.first() {
        None => Ok(0),
        Some(r) => {
            let s: String = r.try_get(0).map_err(db_err)?;
            s.parse()
                .map_err(|_| StoreError::Corrupt(format!("schema_version {s:?} is not a number")))
        }
    }
}

fn newer(from: u32) -> StoreError {
    StoreError::Schema(format!(
        "the database has schema version {from}, newer than this binary knows ({}); upgrade warden",
        latest()
    ))
}

/// Applies pending migrations in one transaction, holding an advisory lock so that nodes starting
/// together migrate once; refuses a database newer than this binary. Returns `(from, to)`.
pub fn migrate(conn: &Conn) -> Result<(u32, u32), StoreError> {
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let out = migrate_locked(conn);
    let unlock = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let out = out?;
    unlock?;
    Ok(out)
}

fn migrate_locked(conn: &Conn) -> Result<(u32, u32), StoreError> {
    let from = version(conn)?;
    let to = latest();
    if from > to {
        return Err(newer(from));
    }
    if from == to {
        return Ok((from, to));
    }
    let mut sql = String::from(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS warden_meta (key text PRIMARY KEY, value text NOT NULL);",
    );
    for m in &MIGRATIONS[from as usize..] {
        sql.push_str(m);
    }
    sql.push_str(&format!(
        "INSERT INTO warden_meta (key, value) VALUES ('schema_version', '{to}')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value;
         COMMIT;"
    ));
    if let Err(e) = conn.batch(&sql) {
        let _ = conn.batch("ROLLBACK");
        return Err(e);
    }
    Ok((from, to))
}

/// Refuses a schema newer than this binary (for `warden migrate --check`).
pub fn check(conn: &Conn) -> Result<(u32, u32), StoreError> {
    let from = version(conn)?;
    if from > latest() {
        return Err(newer(from));
    }
    Ok((from, latest()))
}
