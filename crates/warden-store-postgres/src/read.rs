//! Read queries, shared by readers and write transactions.

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};
use uuid::Uuid;
use warden_core::StoreError;
use warden_core::ports::{
    AuditFilter, AuditRecord, ChainHead, ChangeFilter, Checkpoint, Envelope, FindingFilter,
    IdentityFilter, LeaseFilter, OperatorRecord, ScopeUsage, SigningKeyRecord, SourceUsage,
    StoredEnvelope,
};
use warden_types::{
    AuditEvent, ChangeRequest, Credential, Delegation, Finding, Identity, JobState, McpServer,
    Operator, Secret, StoredPolicy, Team, TrustRule, TrustedIssuer, VaultLease,
};
use warden_types::{ReviewCampaign, ReviewItem};

use crate::{Conn, Param, db_err, from_us, opt_from_us, parse_enum, to_us};

fn json_col<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::Corrupt(format!("{what} is not valid JSON")))
}

/// One column of a row; a value of the wrong type is `Corrupt`.
fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(db_err)
}

const IDENTITY_COLS: &str = "i.id, i.name, i.environment, i.kind, i.owner_id, t.name, i.purpose, i.status, \
    i.status_reason, i.scopes, i.privileged, i.audiences, i.constraints, i.labels, i.parent_id, i.origin, \
    i.created_at, i.updated_at, i.last_used_at, i.expires_at, i.suspended_by_admin";

fn identity_row(row: &Row) -> Result<Identity, StoreError> {
    let id = get::<Uuid>(row, 0)?;
    let parent: Option<Uuid> = get(row, 14)?;
    Ok(Identity {
        id,
        name: get(row, 1)?,
        environment: get(row, 2)?,
        kind: parse_enum(&get::<String>(row, 3)?)?,
        owner_id: get::<Uuid>(row, 4)?,
        owner: get(row, 5)?,
        purpose: get(row, 6)?,
        status: parse_enum(&get::<String>(row, 7)?)?,
        status_reason: get(row, 8)?,
        scopes: json_col(&get::<String>(row, 9)?, "scopes")?,
        privileged: get::<bool>(row, 10)?,
        audiences: json_col(&get::<String>(row, 11)?, "audiences")?,
        constraints: json_col(&get::<String>(row, 12)?, "constraints")?,
        labels: json_col(&get::<String>(row, 13)?, "labels")?,
        parent_id: parent,
        origin: parse_enum(&get::<String>(row, 15)?)?,
        client_id: id.to_string(),
        created_at: from_us(get(row, 16)?)?,
        updated_at: from_us(get(row, 17)?)?,
        last_used_at: opt_from_us(get(row, 18)?)?,
        expires_at: opt_from_us(get(row, 19)?)?,
        suspended_by_admin: get::<bool>(row, 20)?,
    })
}

fn collect<T>(
    conn: &Conn,
    sql: &str,
    params: &[Param<'_>],
    map: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    conn.query(sql, params)?.iter().map(map).collect()
}

fn one<T>(
    conn: &Conn,
    sql: &str,
    params: &[Param<'_>],
    map: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    Ok(collect(conn, sql, params, map)?.into_iter().next())
}

pub(crate) fn identity(conn: &Conn, id: Uuid) -> Result<Option<Identity>, StoreError> {
    let sql = format!(
        "SELECT {IDENTITY_COLS} FROM identities i JOIN teams t ON t.id = i.owner_id WHERE i.id = $1"
    );
    one(conn, &sql, &[&id], identity_row)
}

pub(crate) fn identities_named(
    conn: &Conn,
    name: &str,
    env: Option<&str>,
) -> Result<Vec<Identity>, StoreError> {
    match env {
        Some(env) => {
            let sql = format!(
                "SELECT {IDENTITY_COLS} FROM identities i JOIN teams t ON t.id = i.owner_id WHERE i.name = $1 AND i.environment = $2"
            );
            collect(conn, &sql, &[&name, &env], identity_row)
        }
        None => {
            let sql = format!(
                "SELECT {IDENTITY_COLS} FROM identities i JOIN teams t ON t.id = i.owner_id WHERE i.name = $1 ORDER BY i.environment"
            );
            collect(conn, &sql, &[&name], identity_row)
        }
    }
}

/// Parameters of a statement built at run time.
#[derive(Default)]
struct Args(Vec<Box<dyn ToSql + Sync + Send>>);

impl Args {
    /// Adds a parameter; returns its placeholder.
    fn add(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<Param<'_>> {
        self.0.iter().map(|b| b.as_ref() as Param<'_>).collect()
    }
}

pub(crate) fn list_identities(
    conn: &Conn,
    f: &IdentityFilter,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Identity>, StoreError> {
    let mut sql =
        format!("SELECT {IDENTITY_COLS} FROM identities i JOIN teams t ON t.id = i.owner_id");
    let mut conds: Vec<String> = Vec::new();
    let mut args = Args::default();
    if let Some((k, v)) = &f.label {
        let (pk, pv) = (args.add(k.clone()), args.add(v.clone()));
        conds.push(format!(
            "i.id IN (SELECT identity_id FROM identity_labels WHERE key = {pk} AND value = {pv})"
        ));
    }
    if let Some(teams) = &f.owner_in {
        if teams.is_empty() {
            return Ok(Vec::new());
        }
        conds.push(format!("i.owner_id = ANY({})", args.add(teams.clone())));
    }
    if let Some(o) = f.owner {
        conds.push(format!("i.owner_id = {}", args.add(o)));
    }
    if let Some(k) = f.kind {
        conds.push(format!("i.kind = {}", args.add(k.as_str().to_owned())));
    }
    if let Some(s) = f.status {
        conds.push(format!("i.status = {}", args.add(s.as_str().to_owned())));
    }
    if let Some(e) = &f.environment {
        conds.push(format!("i.environment = {}", args.add(e.clone())));
    }
    if let Some(n) = &f.name {
        conds.push(format!("i.name = {}", args.add(n.clone())));
    }
    if let Some(p) = f.privileged {
        conds.push(format!("i.privileged = {}", args.add(p)));
    }
    if let Some(t) = f.expiring_before {
        conds.push(format!(
            "i.expires_at IS NOT NULL AND i.expires_at < {}",
            args.add(to_us(t))
        ));
    }
    if let Some(a) = after {
        conds.push(format!("i.id > {}", args.add(a)));
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY i.id LIMIT {limit}"));
    collect(conn, &sql, &args.refs(), identity_row)
}

/// A team with its members' names, in one query.
const TEAM_SELECT: &str = "SELECT t.id, t.name, t.description, t.created_at, \
    ARRAY(SELECT o.name FROM team_members m JOIN operators o ON o.id = m.operator_id \
          WHERE m.team_id = t.id ORDER BY o.name) FROM teams t";

fn team_row(row: &Row) -> Result<Team, StoreError> {
    Ok(Team {
        id: get::<Uuid>(row, 0)?,
        name: get(row, 1)?,
        description: get(row, 2)?,
        members: get(row, 4)?,
        created_at: from_us(get(row, 3)?)?,
    })
}

pub(crate) fn team(conn: &Conn, id: Uuid) -> Result<Option<Team>, StoreError> {
    one(
        conn,
        &format!("{TEAM_SELECT} WHERE t.id = $1"),
        &[&id],
        team_row,
    )
}

pub(crate) fn team_named(conn: &Conn, name: &str) -> Result<Option<Team>, StoreError> {
    one(
        conn,
        &format!("{TEAM_SELECT} WHERE t.name = $1"),
        &[&name],
        team_row,
    )
}

pub(crate) fn list_teams(conn: &Conn) -> Result<Vec<Team>, StoreError> {
    collect(
        conn,
        &format!("{TEAM_SELECT} ORDER BY t.name"),
        &[],
        team_row,
    )
}

fn operator_row(row: &Row) -> Result<OperatorRecord, StoreError> {
    let team_ids: Vec<Uuid> = get(row, 6)?;
    let teams: Vec<String> = get(row, 7)?;
    Ok(OperatorRecord {
        operator: Operator {
            id: get::<Uuid>(row, 0)?,
            name: get(row, 1)?,
            role: parse_enum(&get::<String>(row, 2)?)?,
            teams,
            created_at: from_us(get(row, 3)?)?,
            disabled_at: opt_from_us(get(row, 4)?)?,
        },
        team_ids,
        created_by: get::<Option<Uuid>>(row, 5)?,
    })
}

/// An operator with its teams (ids and names, by name), in one query.
const OPERATOR_COLS: &str = "o.id, o.name, o.role, o.created_at, o.disabled_at, o.created_by, \
    ARRAY(SELECT t.id FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.operator_id = o.id ORDER BY t.name), \
    ARRAY(SELECT t.name FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.operator_id = o.id ORDER BY t.name)";

pub(crate) fn operator(conn: &Conn, id: Uuid) -> Result<Option<OperatorRecord>, StoreError> {
    let sql = format!("SELECT {OPERATOR_COLS} FROM operators o WHERE o.id = $1");
    one(conn, &sql, &[&id], operator_row)
}

pub(crate) fn operator_named(
    conn: &Conn,
    name: &str,
) -> Result<Option<OperatorRecord>, StoreError> {
    let sql = format!("SELECT {OPERATOR_COLS} FROM operators o WHERE o.name = $1");
    one(conn, &sql, &[&name], operator_row)
}

pub(crate) fn operator_by_token_hash(
    conn: &Conn,
    hash: &[u8],
) -> Result<Option<OperatorRecord>, StoreError> {
    let sql = format!("SELECT {OPERATOR_COLS} FROM operators o WHERE o.token_hash = $1");
    one(conn, &sql, &[&hash], operator_row)
}

pub(crate) fn list_operators(conn: &Conn) -> Result<Vec<Operator>, StoreError> {
    let sql = format!("SELECT {OPERATOR_COLS} FROM operators o ORDER BY o.name");
    collect(conn, &sql, &[], |r| Ok(operator_row(r)?.operator))
}

const CREDENTIAL_COLS: &str = "id, identity_id, kind, hint, description, thumbprint, public_jwk, created_at, \
    expires_at, last_used_at, revoked_at, revoke_reason, rotated_from, replaced_by, created_by";

fn credential_row(row: &Row) -> Result<Credential, StoreError> {
    let jwk: Option<String> = get(row, 6)?;
    let rotated_from: Option<Uuid> = get(row, 12)?;
    let replaced_by: Option<Uuid> = get(row, 13)?;
    Ok(Credential {
        id: get::<Uuid>(row, 0)?,
        identity_id: get::<Uuid>(row, 1)?,
        kind: parse_enum(&get::<String>(row, 2)?)?,
        hint: get(row, 3)?,
        description: get(row, 4)?,
        thumbprint: get(row, 5)?,
        public_jwk: jwk.map(|j| json_col(&j, "public_jwk")).transpose()?,
        created_at: from_us(get(row, 7)?)?,
        expires_at: from_us(get(row, 8)?)?,
        last_used_at: opt_from_us(get(row, 9)?)?,
        revoked_at: opt_from_us(get(row, 10)?)?,
        revoke_reason: get(row, 11)?,
        rotated_from,
        replaced_by,
        created_by: get(row, 14)?,
    })
}

pub(crate) fn credential(conn: &Conn, id: Uuid) -> Result<Option<Credential>, StoreError> {
    let sql = format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = $1");
    one(conn, &sql, &[&id], credential_row)
}

pub(crate) fn credentials_of(conn: &Conn, identity: Uuid) -> Result<Vec<Credential>, StoreError> {
    let sql =
        format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE identity_id = $1 ORDER BY id");
    collect(conn, &sql, &[&identity], credential_row)
}

pub(crate) fn credential_by_secret_hash(
    conn: &Conn,
    hash: &[u8],
) -> Result<Option<Credential>, StoreError> {
    let sql = format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE secret_hash = $1");
    one(conn, &sql, &[&hash], credential_row)
}

pub(crate) fn overlaps_ended(
    conn: &Conn,
    now: OffsetDateTime,
    limit: usize,
) -> Result<Vec<Credential>, StoreError> {
    let sql = format!(
        "SELECT {CREDENTIAL_COLS} FROM credentials WHERE replaced_by IS NOT NULL AND revoked_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT {limit}"
    );
    collect(conn, &sql, &[&to_us(now)], credential_row)
}

const CHANGE_COLS: &str = "c.id, c.identity_id, i.name, i.environment, c.kind, c.scopes, c.privileged_scopes, \
    c.status, c.requested_by, c.requester_id, c.requested_at, c.decided_by, c.decided_at, c.decision_reason";

fn change_row(row: &Row) -> Result<ChangeRequest, StoreError> {
    Ok(ChangeRequest {
        id: get::<Uuid>(row, 0)?,
        identity_id: get::<Uuid>(row, 1)?,
        identity_name: get(row, 2)?,
        environment: get(row, 3)?,
        kind: parse_enum(&get::<String>(row, 4)?)?,
        scopes: json_col(&get::<String>(row, 5)?, "scopes")?,
        privileged_scopes: json_col(&get::<String>(row, 6)?, "privileged_scopes")?,
        status: parse_enum(&get::<String>(row, 7)?)?,
        requested_by: get(row, 8)?,
        requester_id: get::<Uuid>(row, 9)?,
        requested_at: from_us(get(row, 10)?)?,
        decided_by: get(row, 11)?,
        decided_at: opt_from_us(get(row, 12)?)?,
        decision_reason: get(row, 13)?,
    })
}

pub(crate) fn change_request(conn: &Conn, id: Uuid) -> Result<Option<ChangeRequest>, StoreError> {
    let sql = format!(
        "SELECT {CHANGE_COLS} FROM change_requests c JOIN identities i ON i.id = c.identity_id WHERE c.id = $1"
    );
    one(conn, &sql, &[&id], change_row)
}

pub(crate) fn list_change_requests(
    conn: &Conn,
    f: &ChangeFilter,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<ChangeRequest>, StoreError> {
    let mut sql = format!(
        "SELECT {CHANGE_COLS} FROM change_requests c JOIN identities i ON i.id = c.identity_id"
    );
    let mut conds = Vec::new();
    let mut args = Args::default();
    if let Some(s) = f.status {
        conds.push(format!("c.status = {}", args.add(s.as_str().to_owned())));
    }
    if let Some(i) = f.identity {
        conds.push(format!("c.identity_id = {}", args.add(i)));
    }
    if let Some(teams) = &f.owner_in {
        if teams.is_empty() {
            return Ok(Vec::new());
        }
        conds.push(format!("i.owner_id = ANY({})", args.add(teams.clone())));
    }
    if let Some(a) = after {
        conds.push(format!("c.id > {}", args.add(a)));
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY c.id LIMIT {limit}"));
    collect(conn, &sql, &args.refs(), change_row)
}

const AUDIT_COLS: &str =
    "seq, time_us, actor, action, target, outcome, request_id, source, details, prev_hash, hash";

fn audit_record_row(row: &Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: u64::try_from(get::<i64>(row, 0)?)
            .map_err(|_| StoreError::Corrupt("negative seq".into()))?,
        time_us: get(row, 1)?,
        actor: get(row, 2)?,
        action: get(row, 3)?,
        target: get(row, 4)?,
        outcome: get(row, 5)?,
        request_id: get(row, 6)?,
        source: get(row, 7)?,
        details: get(row, 8)?,
        prev_hash: get(row, 9)?,
        hash: get(row, 10)?,
    })
}

fn to_event(r: AuditRecord) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: r.seq,
        time: from_us(r.time_us)?,
        details: json_col(&r.details, "audit details")?,
        actor: r.actor,
        action: r.action,
        target: r.target,
        outcome: parse_enum(&r.outcome)?,
        request_id: r.request_id,
        source: r.source,
        prev_hash: warden_crypto::hex(&r.prev_hash),
        hash: warden_crypto::hex(&r.hash),
    })
}

pub(crate) fn list_audit(
    conn: &Conn,
    f: &AuditFilter,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut args = Args::default();
    let mut conds = vec![format!(
        "seq > {}",
        args.add(i64::try_from(after).unwrap_or(i64::MAX))
    )];
    for (col, v) in [
        ("target", &f.target),
        ("actor", &f.actor),
        ("action", &f.action),
    ] {
        if let Some(v) = v {
            conds.push(format!("{col} = {}", args.add(v.clone())));
        }
    }
    if let Some(t) = f.since {
        conds.push(format!("time_us >= {}", args.add(to_us(t))));
    }
    if let Some(t) = f.until {
        conds.push(format!("time_us < {}", args.add(to_us(t))));
    }
    let sql = format!(
        "SELECT {AUDIT_COLS} FROM audit_events WHERE {} ORDER BY seq LIMIT {limit}",
        conds.join(" AND ")
    );
    collect(conn, &sql, &args.refs(), |r| to_event(audit_record_row(r)?))
}

pub(crate) fn audit_records(
    conn: &Conn,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    let sql =
        format!("SELECT {AUDIT_COLS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT {limit}");
    collect(
        conn,
        &sql,
        &[&i64::try_from(after).unwrap_or(i64::MAX)],
        audit_record_row,
    )
}

pub(crate) fn signing_keys(conn: &Conn) -> Result<Vec<SigningKeyRecord>, StoreError> {
    collect(
        conn,
        "SELECT kid, alg, public_jwk, sealed_key, created_at, activates_at, retires_at, expires_at \
         FROM signing_keys ORDER BY activates_at, kid",
        &[],
        |r| {
            Ok(SigningKeyRecord {
                kid: get(r, 0)?,
                alg: get(r, 1)?,
                public_jwk: json_col(&get::<String>(r, 2)?, "public_jwk")?,
                sealed_key: get(r, 3)?,
                created_at: from_us(get(r, 4)?)?,
                activates_at: from_us(get(r, 5)?)?,
                retires_at: opt_from_us(get(r, 6)?)?,
                expires_at: opt_from_us(get(r, 7)?)?,
            })
        },
    )
}

pub(crate) fn token_revoked(conn: &Conn, jti: &str) -> Result<bool, StoreError> {
    Ok(one(
        conn,
        "SELECT 1 FROM revoked_tokens WHERE jti = $1",
        &[&jti],
        |_| Ok(()),
    )?
    .is_some())
}

pub(crate) fn audit_checkpoint(conn: &Conn) -> Result<Option<Checkpoint>, StoreError> {
    one(
        conn,
        "SELECT seq, hash, mac FROM audit_checkpoint WHERE id = 1",
        &[],
        |r| {
            let hash: Vec<u8> = get(r, 1)?;
            Ok(Checkpoint {
                head: ChainHead {
                    seq: u64::try_from(get::<i64>(r, 0)?)
                        .map_err(|_| StoreError::Corrupt("negative seq".into()))?,
                    hash: hash.try_into().map_err(|_| {
                        StoreError::Corrupt("checkpoint hash is not 32 bytes".into())
                    })?,
                },
                mac: get(r, 2)?,
            })
        },
    )
}

pub(crate) fn audit_head(conn: &Conn) -> Result<ChainHead, StoreError> {
    let head = one(
        conn,
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        &[],
        |r| Ok((get::<i64>(r, 0)?, get::<Vec<u8>>(r, 1)?)),
    )?;
    match head {
        None => Ok(ChainHead::default()),
        Some((seq, hash)) => Ok(ChainHead {
            seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq".into()))?,
            hash: hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit hash is not 32 bytes".into()))?,
        }),
    }
}

const FINDING_COLS: &str = "id, fingerprint, kind, rule, severity, repository, path, line, commit_id, \
    author, email, preview, suggested_owner, identity_id, identity_name, owner_name, credential_id, \
    action, status, status_reason, reported_by, first_seen, last_seen, times_seen, evidence, proposal";

fn finding_row(row: &Row) -> Result<Finding, StoreError> {
    Ok(Finding {
        id: get(row, 0)?,
        fingerprint: get(row, 1)?,
        kind: parse_enum(&get::<String>(row, 2)?)?,
        rule: get(row, 3)?,
        severity: get(row, 4)?,
        repository: get(row, 5)?,
        path: get(row, 6)?,
        line: u64::try_from(get::<i64>(row, 7)?).unwrap_or(0),
        commit: get(row, 8)?,
        author: get(row, 9)?,
        email: get(row, 10)?,
        preview: get(row, 11)?,
        suggested_owner: get(row, 12)?,
        identity_id: get(row, 13)?,
        identity: get(row, 14)?,
        owner: get(row, 15)?,
        credential_id: get(row, 16)?,
        action: get(row, 17)?,
        status: parse_enum(&get::<String>(row, 18)?)?,
        status_reason: get(row, 19)?,
        reported_by: get(row, 20)?,
        first_seen: from_us(get(row, 21)?)?,
        last_seen: from_us(get(row, 22)?)?,
        times_seen: u64::try_from(get::<i64>(row, 23)?).unwrap_or(0),
        evidence: get::<Option<String>>(row, 24)?
            .map(|e| json_col(&e, "a finding's evidence"))
            .transpose()?,
        proposal: get(row, 25)?,
    })
}

pub(crate) fn finding(conn: &Conn, id: Uuid) -> Result<Option<Finding>, StoreError> {
    let sql = format!("SELECT {FINDING_COLS} FROM findings WHERE id = $1");
    one(conn, &sql, &[&id], finding_row)
}

pub(crate) fn finding_by_fingerprint(
    conn: &Conn,
    fingerprint: &str,
) -> Result<Option<Finding>, StoreError> {
    let sql = format!("SELECT {FINDING_COLS} FROM findings WHERE fingerprint = $1");
    one(conn, &sql, &[&fingerprint], finding_row)
}

pub(crate) fn list_findings(
    conn: &Conn,
    f: &FindingFilter,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Finding>, StoreError> {
    let mut conds = Vec::new();
    let mut args = Args::default();
    if let Some(s) = f.status {
        conds.push(format!("status = {}", args.add(s.as_str().to_owned())));
    }
    if let Some(k) = f.kind {
        conds.push(format!("kind = {}", args.add(k.as_str().to_owned())));
    }
    if let Some(a) = after {
        conds.push(format!("id > {}", args.add(a)));
    }
    let mut sql = format!("SELECT {FINDING_COLS} FROM findings");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
    collect(conn, &sql, &args.refs(), finding_row)
}

pub(crate) fn list_credentials(
    conn: &Conn,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Credential>, StoreError> {
    let after = after.unwrap_or(Uuid::nil());
    let sql = format!(
        "SELECT {CREDENTIAL_COLS} FROM credentials WHERE id > $1 ORDER BY id LIMIT {limit}"
    );
    collect(conn, &sql, &[&after], credential_row)
}

pub(crate) fn scope_usage(conn: &Conn) -> Result<Vec<ScopeUsage>, StoreError> {
    collect(
        conn,
        "SELECT identity_id, scope, last_used FROM usage_scopes",
        &[],
        |row| {
            Ok(ScopeUsage {
                identity: get(row, 0)?,
                scope: get(row, 1)?,
                last_used: from_us(get(row, 2)?)?,
            })
        },
    )
}

pub(crate) fn source_usage(
    conn: &Conn,
    since: OffsetDateTime,
) -> Result<Vec<SourceUsage>, StoreError> {
    collect(
        conn,
        "SELECT credential_id, identity_id, network, first_seen, last_seen, count \
         FROM usage_sources WHERE last_seen >= $1",
        &[&to_us(since)],
        |row| {
            Ok(SourceUsage {
                credential: get(row, 0)?,
                identity: get(row, 1)?,
                network: get(row, 2)?,
                first_seen: from_us(get(row, 3)?)?,
                last_seen: from_us(get(row, 4)?)?,
                count: u64::try_from(get::<i64>(row, 5)?).unwrap_or(0),
            })
        },
    )
}

pub(crate) fn job_state(conn: &Conn, job: &str) -> Result<Option<JobState>, StoreError> {
    one(
        conn,
        "SELECT doc FROM job_states WHERE job = $1",
        &[&job],
        |row| json_col(&get::<String>(row, 0)?, "a job state"),
    )
}

pub(crate) fn anomaly_baselines(
    conn: &Conn,
    node: &str,
) -> Result<Vec<(Uuid, Vec<u8>)>, StoreError> {
    collect(
        conn,
        "SELECT identity_id, state FROM anomaly_baselines WHERE node = $1",
        &[&node],
        |row| Ok((get::<Uuid>(row, 0)?, get::<Vec<u8>>(row, 1)?)),
    )
}

pub(crate) fn sink_cursor(conn: &Conn, sink: &str) -> Result<Option<u64>, StoreError> {
    one(
        conn,
        "SELECT seq FROM sink_cursors WHERE sink = $1",
        &[&sink],
        |row| Ok(u64::try_from(get::<i64>(row, 0)?).unwrap_or(0)),
    )
}

pub(crate) fn list_job_states(conn: &Conn) -> Result<Vec<JobState>, StoreError> {
    collect(
        conn,
        "SELECT doc FROM job_states ORDER BY job",
        &[],
        |row| json_col(&get::<String>(row, 0)?, "a job state"),
    )
}

pub(crate) fn review_campaign(conn: &Conn, id: Uuid) -> Result<Option<ReviewCampaign>, StoreError> {
    one(
        conn,
        "SELECT doc FROM review_campaigns WHERE id = $1",
        &[&id],
        |row| json_col(&get::<String>(row, 0)?, "a review campaign"),
    )
}

pub(crate) fn list_review_campaigns(conn: &Conn) -> Result<Vec<ReviewCampaign>, StoreError> {
    collect(
        conn,
        "SELECT doc FROM review_campaigns ORDER BY id",
        &[],
        |row| json_col(&get::<String>(row, 0)?, "a review campaign"),
    )
}

pub(crate) fn review_items(conn: &Conn, campaign: Uuid) -> Result<Vec<ReviewItem>, StoreError> {
    collect(
        conn,
        "SELECT doc FROM review_items WHERE campaign_id = $1 ORDER BY identity_id",
        &[&campaign],
        |row| json_col(&get::<String>(row, 0)?, "a review item"),
    )
}

fn secret_row(row: &Row) -> Result<Secret, StoreError> {
    json_col(&get::<String>(row, 0)?, "a secret")
}

pub(crate) fn secret(conn: &Conn, path: &str) -> Result<Option<Secret>, StoreError> {
    one(
        conn,
        "SELECT doc FROM secrets WHERE path = $1",
        &[&path],
        secret_row,
    )
}

/// `LIKE` pattern matching strings that start with `prefix` (`\\` escapes).
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

pub(crate) fn list_secrets(
    conn: &Conn,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Secret>, StoreError> {
    let sql = format!(
        "SELECT doc FROM secrets WHERE path LIKE $1 AND path COLLATE \"C\" > $2 ORDER BY path COLLATE \"C\" LIMIT {limit}"
    );
    let after = after.unwrap_or("");
    collect(conn, &sql, &[&like_prefix(prefix), &after], secret_row)
}

pub(crate) fn secrets_due(
    conn: &Conn,
    now: OffsetDateTime,
    limit: usize,
) -> Result<Vec<Secret>, StoreError> {
    let sql = format!(
        "SELECT doc FROM secrets WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT {limit}"
    );
    collect(conn, &sql, &[&to_us(now)], secret_row)
}

fn envelope_row(row: &Row) -> Result<Envelope, StoreError> {
    Ok(Envelope {
        key_id: get(row, 0)?,
        wrapped_key: get(row, 1)?,
        ciphertext: get(row, 2)?,
    })
}

pub(crate) fn secret_envelope(
    conn: &Conn,
    path: &str,
    version: u32,
) -> Result<Option<Envelope>, StoreError> {
    one(
        conn,
        "SELECT key_id, wrapped_key, ciphertext FROM secret_versions WHERE path = $1 AND version = $2",
        &[&path, &i64::from(version)],
        envelope_row,
    )
}

pub(crate) fn vault_key_ids(conn: &Conn) -> Result<Vec<String>, StoreError> {
    collect(
        conn,
        "SELECT DISTINCT key_id FROM secret_versions ORDER BY key_id",
        &[],
        |r| get(r, 0),
    )
}

pub(crate) fn envelopes_not_under(
    conn: &Conn,
    key_id: &str,
    limit: usize,
) -> Result<Vec<StoredEnvelope>, StoreError> {
    let sql = format!(
        "SELECT key_id, wrapped_key, ciphertext, path, version FROM secret_versions \
         WHERE key_id <> $1 ORDER BY path, version LIMIT {limit}"
    );
    collect(conn, &sql, &[&key_id], |r| {
        Ok(StoredEnvelope {
            envelope: envelope_row(r)?,
            path: get(r, 3)?,
            version: u32::try_from(get::<i64>(r, 4)?)
                .map_err(|_| StoreError::Corrupt("a secret version is out of range".into()))?,
        })
    })
}

fn lease_row(row: &Row) -> Result<VaultLease, StoreError> {
    json_col(&get::<String>(row, 0)?, "a vault lease")
}

pub(crate) fn vault_lease(conn: &Conn, id: Uuid) -> Result<Option<VaultLease>, StoreError> {
    one(
        conn,
        "SELECT doc FROM vault_leases WHERE id = $1",
        &[&id],
        lease_row,
    )
}

pub(crate) fn list_vault_leases(
    conn: &Conn,
    f: &LeaseFilter,
    limit: usize,
) -> Result<Vec<VaultLease>, StoreError> {
    let mut conds = vec!["TRUE".to_owned()];
    let mut args = Args::default();
    if let Some(p) = &f.prefix {
        conds.push(format!("path LIKE {}", args.add(like_prefix(p))));
    }
    if let Some(i) = f.identity {
        conds.push(format!("identity_id = {}", args.add(i)));
    }
    if f.active_only {
        conds.push("NOT revoked".into());
    }
    let sql = format!(
        "SELECT doc FROM vault_leases WHERE {} ORDER BY id LIMIT {limit}",
        conds.join(" AND ")
    );
    collect(conn, &sql, &args.refs(), lease_row)
}

pub(crate) fn vault_leases_due(
    conn: &Conn,
    now: OffsetDateTime,
    limit: usize,
) -> Result<Vec<VaultLease>, StoreError> {
    let sql = format!(
        "SELECT doc FROM vault_leases WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT {limit}"
    );
    collect(conn, &sql, &[&to_us(now)], lease_row)
}

fn issuer_row(row: &Row) -> Result<TrustedIssuer, StoreError> {
    json_col(&get::<String>(row, 0)?, "a trusted issuer")
}

pub(crate) fn trusted_issuer_named(
    conn: &Conn,
    name: &str,
) -> Result<Option<TrustedIssuer>, StoreError> {
    one(
        conn,
        "SELECT doc FROM trusted_issuers WHERE name = $1",
        &[&name],
        issuer_row,
    )
}

pub(crate) fn trusted_issuer_by_iss(
    conn: &Conn,
    iss: &str,
) -> Result<Option<TrustedIssuer>, StoreError> {
    one(
        conn,
        "SELECT doc FROM trusted_issuers WHERE issuer = $1",
        &[&iss],
        issuer_row,
    )
}

pub(crate) fn list_trusted_issuers(conn: &Conn) -> Result<Vec<TrustedIssuer>, StoreError> {
    collect(
        conn,
        "SELECT doc FROM trusted_issuers ORDER BY name",
        &[],
        issuer_row,
    )
}

fn rule_row(row: &Row) -> Result<TrustRule, StoreError> {
    json_col(&get::<String>(row, 0)?, "a trust rule")
}

pub(crate) fn trust_rule(conn: &Conn, id: Uuid) -> Result<Option<TrustRule>, StoreError> {
    one(
        conn,
        "SELECT doc FROM trust_rules WHERE id = $1",
        &[&id],
        rule_row,
    )
}

pub(crate) fn trust_rules(
    conn: &Conn,
    issuer: Option<Uuid>,
    identity: Option<Uuid>,
) -> Result<Vec<TrustRule>, StoreError> {
    let mut conds = vec!["TRUE".to_owned()];
    let mut args = Args::default();
    if let Some(i) = issuer {
        conds.push(format!("issuer_id = {}", args.add(i)));
    }
    if let Some(i) = identity {
        conds.push(format!("identity_id = {}", args.add(i)));
    }
    let sql = format!(
        "SELECT doc FROM trust_rules WHERE {} ORDER BY id LIMIT 10000",
        conds.join(" AND ")
    );
    collect(conn, &sql, &args.refs(), rule_row)
}

fn delegation_row(row: &Row) -> Result<Delegation, StoreError> {
    json_col(&get::<String>(row, 0)?, "a delegation")
}

pub(crate) fn delegation(conn: &Conn, id: Uuid) -> Result<Option<Delegation>, StoreError> {
    one(
        conn,
        "SELECT doc FROM delegations WHERE id = $1",
        &[&id],
        delegation_row,
    )
}

pub(crate) fn delegations(conn: &Conn, agent: Option<Uuid>) -> Result<Vec<Delegation>, StoreError> {
    match agent {
        Some(a) => collect(
            conn,
            "SELECT doc FROM delegations WHERE agent_id = $1 ORDER BY id LIMIT 10000",
            &[&a],
            delegation_row,
        ),
        None => collect(
            conn,
            "SELECT doc FROM delegations ORDER BY id LIMIT 10000",
            &[],
            delegation_row,
        ),
    }
}

pub(crate) fn mcp_server(conn: &Conn, id: Uuid) -> Result<Option<McpServer>, StoreError> {
    one(
        conn,
        "SELECT doc FROM mcp_servers WHERE identity_id = $1",
        &[&id],
        |r| json_col(&get::<String>(r, 0)?, "an MCP server"),
    )
}

pub(crate) fn policies(conn: &Conn) -> Result<Vec<StoredPolicy>, StoreError> {
    collect(conn, "SELECT doc FROM policies ORDER BY name", &[], |r| {
        json_col(&get::<String>(r, 0)?, "a policy")
    })
}

/// Implements `ReadStore` for a type with a `conn(&self) -> &Conn` method.
macro_rules! impl_read_store {
    ($t:ty) => {
        impl warden_core::ports::ReadStore for $t {
            fn identity(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::Identity>, warden_core::StoreError> {
                crate::read::identity(self.conn(), id)
            }
            fn identities_named(
                &self,
                name: &str,
                env: Option<&str>,
            ) -> Result<Vec<warden_types::Identity>, warden_core::StoreError> {
                crate::read::identities_named(self.conn(), name, env)
            }
            fn list_identities(
                &self,
                f: &warden_core::ports::IdentityFilter,
                after: Option<uuid::Uuid>,
                limit: usize,
            ) -> Result<Vec<warden_types::Identity>, warden_core::StoreError> {
                crate::read::list_identities(self.conn(), f, after, limit)
            }
            fn team(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::Team>, warden_core::StoreError> {
                crate::read::team(self.conn(), id)
            }
            fn team_named(
                &self,
                name: &str,
            ) -> Result<Option<warden_types::Team>, warden_core::StoreError> {
                crate::read::team_named(self.conn(), name)
            }
            fn list_teams(&self) -> Result<Vec<warden_types::Team>, warden_core::StoreError> {
                crate::read::list_teams(self.conn())
            }
            fn operator(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_core::ports::OperatorRecord>, warden_core::StoreError> {
                crate::read::operator(self.conn(), id)
            }
            fn operator_named(
                &self,
                name: &str,
            ) -> Result<Option<warden_core::ports::OperatorRecord>, warden_core::StoreError> {
                crate::read::operator_named(self.conn(), name)
            }
            fn operator_by_token_hash(
                &self,
                hash: &[u8],
            ) -> Result<Option<warden_core::ports::OperatorRecord>, warden_core::StoreError> {
                crate::read::operator_by_token_hash(self.conn(), hash)
            }
            fn list_operators(
                &self,
            ) -> Result<Vec<warden_types::Operator>, warden_core::StoreError> {
                crate::read::list_operators(self.conn())
            }
            fn credential(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::Credential>, warden_core::StoreError> {
                crate::read::credential(self.conn(), id)
            }
            fn credentials_of(
                &self,
                identity: uuid::Uuid,
            ) -> Result<Vec<warden_types::Credential>, warden_core::StoreError> {
                crate::read::credentials_of(self.conn(), identity)
            }
            fn credential_by_secret_hash(
                &self,
                hash: &[u8],
            ) -> Result<Option<warden_types::Credential>, warden_core::StoreError> {
                crate::read::credential_by_secret_hash(self.conn(), hash)
            }
            fn overlaps_ended(
                &self,
                now: time::OffsetDateTime,
                limit: usize,
            ) -> Result<Vec<warden_types::Credential>, warden_core::StoreError> {
                crate::read::overlaps_ended(self.conn(), now, limit)
            }
            fn change_request(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::ChangeRequest>, warden_core::StoreError> {
                crate::read::change_request(self.conn(), id)
            }
            fn list_change_requests(
                &self,
                f: &warden_core::ports::ChangeFilter,
                after: Option<uuid::Uuid>,
                limit: usize,
            ) -> Result<Vec<warden_types::ChangeRequest>, warden_core::StoreError> {
                crate::read::list_change_requests(self.conn(), f, after, limit)
            }
            fn list_audit(
                &self,
                f: &warden_core::ports::AuditFilter,
                after: u64,
                limit: usize,
            ) -> Result<Vec<warden_types::AuditEvent>, warden_core::StoreError> {
                crate::read::list_audit(self.conn(), f, after, limit)
            }
            fn audit_records(
                &self,
                after: u64,
                limit: usize,
            ) -> Result<Vec<warden_core::ports::AuditRecord>, warden_core::StoreError> {
                crate::read::audit_records(self.conn(), after, limit)
            }
            fn audit_checkpoint(
                &self,
            ) -> Result<Option<warden_core::ports::Checkpoint>, warden_core::StoreError> {
                crate::read::audit_checkpoint(self.conn())
            }
            fn signing_keys(
                &self,
            ) -> Result<Vec<warden_core::ports::SigningKeyRecord>, warden_core::StoreError> {
                crate::read::signing_keys(self.conn())
            }
            fn token_revoked(&self, jti: &str) -> Result<bool, warden_core::StoreError> {
                crate::read::token_revoked(self.conn(), jti)
            }
            fn finding(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::Finding>, warden_core::StoreError> {
                crate::read::finding(self.conn(), id)
            }
            fn finding_by_fingerprint(
                &self,
                fingerprint: &str,
            ) -> Result<Option<warden_types::Finding>, warden_core::StoreError> {
                crate::read::finding_by_fingerprint(self.conn(), fingerprint)
            }
            fn list_findings(
                &self,
                f: &warden_core::ports::FindingFilter,
                after: Option<uuid::Uuid>,
                limit: usize,
            ) -> Result<Vec<warden_types::Finding>, warden_core::StoreError> {
                crate::read::list_findings(self.conn(), f, after, limit)
            }
            fn list_credentials(
                &self,
                after: Option<uuid::Uuid>,
                limit: usize,
            ) -> Result<Vec<warden_types::Credential>, warden_core::StoreError> {
                crate::read::list_credentials(self.conn(), after, limit)
            }
            fn scope_usage(
                &self,
            ) -> Result<Vec<warden_core::ports::ScopeUsage>, warden_core::StoreError> {
                crate::read::scope_usage(self.conn())
            }
            fn source_usage(
                &self,
                since: time::OffsetDateTime,
            ) -> Result<Vec<warden_core::ports::SourceUsage>, warden_core::StoreError> {
                crate::read::source_usage(self.conn(), since)
            }
            fn job_state(
                &self,
                job: &str,
            ) -> Result<Option<warden_types::JobState>, warden_core::StoreError> {
                crate::read::job_state(self.conn(), job)
            }
            fn list_job_states(
                &self,
            ) -> Result<Vec<warden_types::JobState>, warden_core::StoreError> {
                crate::read::list_job_states(self.conn())
            }
            fn anomaly_baselines(
                &self,
                node: &str,
            ) -> Result<Vec<(uuid::Uuid, Vec<u8>)>, warden_core::StoreError> {
                crate::read::anomaly_baselines(self.conn(), node)
            }
            fn sink_cursor(&self, sink: &str) -> Result<Option<u64>, warden_core::StoreError> {
                crate::read::sink_cursor(self.conn(), sink)
            }
            fn review_campaign(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::ReviewCampaign>, warden_core::StoreError> {
                crate::read::review_campaign(self.conn(), id)
            }
            fn list_review_campaigns(
                &self,
            ) -> Result<Vec<warden_types::ReviewCampaign>, warden_core::StoreError> {
                crate::read::list_review_campaigns(self.conn())
            }
            fn review_items(
                &self,
                campaign: uuid::Uuid,
            ) -> Result<Vec<warden_types::ReviewItem>, warden_core::StoreError> {
                crate::read::review_items(self.conn(), campaign)
            }
            fn secret(
                &self,
                path: &str,
            ) -> Result<Option<warden_types::Secret>, warden_core::StoreError> {
                crate::read::secret(self.conn(), path)
            }
            fn list_secrets(
                &self,
                prefix: &str,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<warden_types::Secret>, warden_core::StoreError> {
                crate::read::list_secrets(self.conn(), prefix, after, limit)
            }
            fn secrets_due(
                &self,
                now: time::OffsetDateTime,
                limit: usize,
            ) -> Result<Vec<warden_types::Secret>, warden_core::StoreError> {
                crate::read::secrets_due(self.conn(), now, limit)
            }
            fn secret_envelope(
                &self,
                path: &str,
                version: u32,
            ) -> Result<Option<warden_core::ports::Envelope>, warden_core::StoreError> {
                crate::read::secret_envelope(self.conn(), path, version)
            }
            fn vault_key_ids(&self) -> Result<Vec<String>, warden_core::StoreError> {
                crate::read::vault_key_ids(self.conn())
            }
            fn envelopes_not_under(
                &self,
                key_id: &str,
                limit: usize,
            ) -> Result<Vec<warden_core::ports::StoredEnvelope>, warden_core::StoreError> {
                crate::read::envelopes_not_under(self.conn(), key_id, limit)
            }
            fn vault_lease(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::VaultLease>, warden_core::StoreError> {
                crate::read::vault_lease(self.conn(), id)
            }
            fn list_vault_leases(
                &self,
                f: &warden_core::ports::LeaseFilter,
                limit: usize,
            ) -> Result<Vec<warden_types::VaultLease>, warden_core::StoreError> {
                crate::read::list_vault_leases(self.conn(), f, limit)
            }
            fn vault_leases_due(
                &self,
                now: time::OffsetDateTime,
                limit: usize,
            ) -> Result<Vec<warden_types::VaultLease>, warden_core::StoreError> {
                crate::read::vault_leases_due(self.conn(), now, limit)
            }
            fn trusted_issuer_named(
                &self,
                name: &str,
            ) -> Result<Option<warden_types::TrustedIssuer>, warden_core::StoreError> {
                crate::read::trusted_issuer_named(self.conn(), name)
            }
            fn trusted_issuer_by_iss(
                &self,
                iss: &str,
            ) -> Result<Option<warden_types::TrustedIssuer>, warden_core::StoreError> {
                crate::read::trusted_issuer_by_iss(self.conn(), iss)
            }
            fn list_trusted_issuers(
                &self,
            ) -> Result<Vec<warden_types::TrustedIssuer>, warden_core::StoreError> {
                crate::read::list_trusted_issuers(self.conn())
            }
            fn trust_rule(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::TrustRule>, warden_core::StoreError> {
                crate::read::trust_rule(self.conn(), id)
            }
            fn trust_rules(
                &self,
                issuer: Option<uuid::Uuid>,
                identity: Option<uuid::Uuid>,
            ) -> Result<Vec<warden_types::TrustRule>, warden_core::StoreError> {
                crate::read::trust_rules(self.conn(), issuer, identity)
            }
            fn delegation(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::Delegation>, warden_core::StoreError> {
                crate::read::delegation(self.conn(), id)
            }
            fn delegations(
                &self,
                agent: Option<uuid::Uuid>,
            ) -> Result<Vec<warden_types::Delegation>, warden_core::StoreError> {
                crate::read::delegations(self.conn(), agent)
            }
            fn mcp_server(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<warden_types::McpServer>, warden_core::StoreError> {
                crate::read::mcp_server(self.conn(), id)
            }
            fn policies(&self) -> Result<Vec<warden_types::StoredPolicy>, warden_core::StoreError> {
                crate::read::policies(self.conn())
            }
        }
    };
}
pub(crate) use impl_read_store;
