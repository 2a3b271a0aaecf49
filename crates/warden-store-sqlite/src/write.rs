//! The write transaction a job sees.

use rusqlite::{Connection, params};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::StoreError;
use warden_core::ports::{
    AfterCommit, AuditRecord, ChainHead, Envelope, Lease, ScopeUsage, SigningKeyRecord,
    SourceUsage, WriteTx,
};
use warden_types::{
    ChangeRequest, Credential, Delegation, Finding, Identity, JobState, McpServer, Operator,
    Secret, StoredPolicy, Team, TrustRule, TrustedIssuer, VaultLease,
};
use warden_types::{ReviewCampaign, ReviewItem};

use crate::read::impl_read_store;
use crate::{db_err, from_us, opt_us, to_us};

/// A job's view of the open transaction. `head` caches the audit chain head so appends need no
/// query; the writer restores it when a job's savepoint is rolled back.
pub(crate) struct SqliteTx<'c> {
    pub(crate) conn: &'c Connection,
    pub(crate) head: Option<ChainHead>,
    /// After-commit effects of the jobs that succeeded so far in this transaction.
    pub(crate) effects: Vec<AfterCommit>,
}

impl SqliteTx<'_> {
    fn conn(&self) -> &Connection {
        self.conn
    }
}

impl_read_store!(SqliteTx<'_>);

fn json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(format!("encoding JSON: {e}")))
}

fn b(id: Uuid) -> Vec<u8> {
    id.as_bytes().to_vec()
}

fn ob(id: Option<Uuid>) -> Option<Vec<u8>> {
    id.map(b)
}

fn exec(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .map_err(db_err)?
        .execute(p)
        .map_err(db_err)
}

impl SqliteTx<'_> {
    fn write_labels(&self, identity: &Identity) -> Result<(), StoreError> {
        exec(
            self.conn,
            "DELETE FROM identity_labels WHERE identity_id = ?1",
            [b(identity.id)],
        )?;
        for (k, v) in &identity.labels {
            exec(
                self.conn,
                "INSERT INTO identity_labels (identity_id, key, value) VALUES (?1, ?2, ?3)",
                params![b(identity.id), k, v],
            )?;
        }
        Ok(())
    }
}

impl WriteTx for SqliteTx<'_> {
    fn insert_team(&mut self, t: &Team) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO teams (id, name, description, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![b(t.id), t.name, t.description, to_us(t.created_at)],
        )?;
        Ok(())
    }

    fn add_member(&mut self, team: Uuid, operator: Uuid) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT OR IGNORE INTO team_members (team_id, operator_id) VALUES (?1, ?2)",
            [b(team), b(operator)],
        )?;
        Ok(())
    }

    fn remove_member(&mut self, team: Uuid, operator: Uuid) -> Result<bool, StoreError> {
        Ok(exec(
            self.conn,
            "DELETE FROM team_members WHERE team_id = ?1 AND operator_id = ?2",
            [b(team), b(operator)],
        )? > 0)
    }

    fn insert_operator(
        &mut self,
        o: &Operator,
        token_hash: &[u8],
        created_by: Option<Uuid>,
    ) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO operators (id, name, role, token_hash, created_at, disabled_at, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                b(o.id),
                o.name,
                o.role.as_str(),
                token_hash,
                to_us(o.created_at),
                opt_us(o.disabled_at),
                ob(created_by)
            ],
        )?;
        Ok(())
    }

    fn update_operator(
        &mut self,
        o: &Operator,
        token_hash: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let n = match token_hash {
            Some(h) => exec(
                self.conn,
                "UPDATE operators SET disabled_at = ?2, token_hash = ?3 WHERE id = ?1",
                params![b(o.id), opt_us(o.disabled_at), h],
            )?,
            None => exec(
                self.conn,
                "UPDATE operators SET disabled_at = ?2 WHERE id = ?1",
                params![b(o.id), opt_us(o.disabled_at)],
            )?,
        };
        if n != 1 {
            return Err(StoreError::Internal(
                "operator to update does not exist".into(),
            ));
        }
        Ok(())
    }

    fn insert_identity(&mut self, i: &Identity) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO identities (id, name, environment, kind, owner_id, purpose, status, status_reason, scopes, \
             privileged, audiences, constraints, labels, parent_id, origin, created_at, updated_at, last_used_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            params![
                b(i.id),
                i.name,
                i.environment,
                i.kind.as_str(),
                b(i.owner_id),
                i.purpose,
                i.status.as_str(),
                i.status_reason,
                json(&i.scopes)?,
                i.privileged,
                json(&i.audiences)?,
                json(&i.constraints)?,
                json(&i.labels)?,
                ob(i.parent_id),
                i.origin.as_str(),
                to_us(i.created_at),
                to_us(i.updated_at),
                opt_us(i.last_used_at),
                opt_us(i.expires_at)
            ],
        )?;
        self.write_labels(i)
    }

    fn update_identity(&mut self, i: &Identity) -> Result<(), StoreError> {
        let n = exec(
            self.conn,
            "UPDATE identities SET purpose = ?2, status = ?3, status_reason = ?4, scopes = ?5, privileged = ?6, \
             audiences = ?7, constraints = ?8, labels = ?9, updated_at = ?10, expires_at = ?11, \
             suspended_by_admin = ?12 WHERE id = ?1",
            params![
                b(i.id),
                i.purpose,
                i.status.as_str(),
                i.status_reason,
                json(&i.scopes)?,
                i.privileged,
                json(&i.audiences)?,
                json(&i.constraints)?,
                json(&i.labels)?,
                to_us(i.updated_at),
                opt_us(i.expires_at),
                i.suspended_by_admin
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Internal(
                "identity to update does not exist".into(),
            ));
        }
        self.write_labels(i)
    }

    fn insert_credential(
        &mut self,
        c: &Credential,
        secret_hash: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let jwk = c.public_jwk.as_ref().map(json).transpose()?;
        exec(
            self.conn,
            "INSERT INTO credentials (id, identity_id, kind, secret_hash, hint, description, thumbprint, public_jwk, \
             created_at, expires_at, last_used_at, revoked_at, revoke_reason, rotated_from, replaced_by, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                b(c.id),
                b(c.identity_id),
                c.kind.as_str(),
                secret_hash,
                c.hint,
                c.description,
                c.thumbprint,
                jwk,
                to_us(c.created_at),
                to_us(c.expires_at),
                opt_us(c.last_used_at),
                opt_us(c.revoked_at),
                c.revoke_reason,
                ob(c.rotated_from),
                ob(c.replaced_by),
                c.created_by
            ],
        )?;
        Ok(())
    }

    fn update_credential(&mut self, c: &Credential) -> Result<(), StoreError> {
        exec(
            self.conn,
            "UPDATE credentials SET expires_at = ?2, revoked_at = ?3, revoke_reason = ?4, replaced_by = ?5, \
             description = ?6 WHERE id = ?1",
            params![
                b(c.id),
                to_us(c.expires_at),
                opt_us(c.revoked_at),
                c.revoke_reason,
                ob(c.replaced_by),
                c.description
            ],
        )?;
        Ok(())
    }

    fn touch_last_used(
        &mut self,
        credential: Uuid,
        identity: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let t = to_us(at);
        exec(
            self.conn,
            "UPDATE credentials SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
            params![b(credential), t],
        )?;
        exec(
            self.conn,
            "UPDATE identities SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
            params![b(identity), t],
        )?;
        Ok(())
    }

    fn record_usage(
        &mut self,
        scopes: &[ScopeUsage],
        sources: &[SourceUsage],
    ) -> Result<(), StoreError> {
        for u in scopes {
            exec(
                self.conn,
                "INSERT INTO usage_scopes (identity_id, scope, last_used) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (identity_id, scope) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
                params![b(u.identity), u.scope, to_us(u.last_used)],
            )?;
        }
        for u in sources {
            exec(
                self.conn,
                "INSERT INTO usage_sources (credential_id, network, identity_id, first_seen, last_seen, count) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (credential_id, network) DO UPDATE SET \
                 first_seen = min(first_seen, excluded.first_seen), \
                 last_seen = max(last_seen, excluded.last_seen), count = count + excluded.count",
                params![
                    b(u.credential),
                    u.network,
                    b(u.identity),
                    to_us(u.first_seen),
                    to_us(u.last_seen),
                    i64::try_from(u.count).unwrap_or(i64::MAX)
                ],
            )?;
        }
        Ok(())
    }

    fn put_job_state(&mut self, state: &JobState) -> Result<(), StoreError> {
        let doc = serde_json::to_string(state)
            .map_err(|e| StoreError::Internal(format!("job state: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO job_states (job, doc) VALUES (?1, ?2) \
             ON CONFLICT (job) DO UPDATE SET doc = excluded.doc",
            params![state.job, doc],
        )?;
        Ok(())
    }

    fn put_anomaly_baselines(
        &mut self,
        node: &str,
        rows: &[(Uuid, Vec<u8>)],
    ) -> Result<(), StoreError> {
        for (identity, state) in rows {
            exec(
                self.conn,
                "INSERT INTO anomaly_baselines (node, identity_id, state) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (node, identity_id) DO UPDATE SET state = excluded.state",
                params![node, b(*identity), state],
            )?;
        }
        Ok(())
    }

    fn put_sink_cursor(
        &mut self,
        sink: &str,
        seq: u64,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO sink_cursors (sink, seq, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            params![sink, i64::try_from(seq).unwrap_or(i64::MAX), to_us(at)],
        )?;
        Ok(())
    }

    fn put_review_campaign(&mut self, c: &ReviewCampaign) -> Result<(), StoreError> {
        let doc = serde_json::to_string(c)
            .map_err(|e| StoreError::Internal(format!("review campaign: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO review_campaigns (id, doc) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            params![b(c.id), doc],
        )?;
        Ok(())
    }

    fn put_review_item(&mut self, i: &ReviewItem) -> Result<(), StoreError> {
        let doc = serde_json::to_string(i)
            .map_err(|e| StoreError::Internal(format!("review item: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO review_items (campaign_id, identity_id, doc) VALUES (?1, ?2, ?3) \
             ON CONFLICT (campaign_id, identity_id) DO UPDATE SET doc = excluded.doc",
            params![b(i.campaign_id), b(i.identity_id), doc],
        )?;
        Ok(())
    }

    fn insert_signing_key(&mut self, k: &SigningKeyRecord) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_key, created_at, activates_at, retires_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                k.kid,
                k.alg,
                json(&k.public_jwk)?,
                k.sealed_key,
                to_us(k.created_at),
                to_us(k.activates_at),
                opt_us(k.retires_at),
                opt_us(k.expires_at)
            ],
        )?;
        Ok(())
    }

    fn schedule_signing_key(
        &mut self,
        kid: &str,
        retires_at: Option<OffsetDateTime>,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let n = exec(
            self.conn,
            "UPDATE signing_keys SET retires_at = ?2, expires_at = ?3 WHERE kid = ?1",
            params![kid, opt_us(retires_at), opt_us(expires_at)],
        )?;
        if n == 0 {
            return Err(StoreError::Internal(format!("no signing key {kid:?}")));
        }
        Ok(())
    }

    fn use_once(
        &mut self,
        hash: &[u8; 32],
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = exec(
            self.conn,
            "INSERT OR IGNORE INTO token_once (keep_until, hash) VALUES (?1, ?2)",
            params![to_us(expires_at), hash.as_slice()],
        )?;
        Ok(n == 1)
    }

    fn revoke_token(
        &mut self,
        jti: &str,
        identity: Uuid,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT OR IGNORE INTO revoked_tokens (jti, identity_id, expires_at) VALUES (?1, ?2, ?3)",
            params![jti, b(identity), to_us(expires_at)],
        )?;
        Ok(())
    }

    fn purge_expired_token_state(&mut self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let t = to_us(now);
        let a = exec(
            self.conn,
            "DELETE FROM token_once WHERE keep_until <= ?1",
            [t],
        )?;
        let b = exec(
            self.conn,
            "DELETE FROM revoked_tokens WHERE expires_at <= ?1",
            [t],
        )?;
        Ok(a + b)
    }

    fn insert_change_request(&mut self, c: &ChangeRequest) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO change_requests (id, identity_id, kind, scopes, privileged_scopes, status, requested_by, \
             requester_id, requested_at, decided_by, decided_at, decision_reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                b(c.id),
                b(c.identity_id),
                c.kind.as_str(),
                json(&c.scopes)?,
                json(&c.privileged_scopes)?,
                c.status.as_str(),
                c.requested_by,
                b(c.requester_id),
                to_us(c.requested_at),
                c.decided_by,
                opt_us(c.decided_at),
                c.decision_reason
            ],
        )?;
        Ok(())
    }

    fn update_change_request(&mut self, c: &ChangeRequest) -> Result<(), StoreError> {
        exec(
            self.conn,
            "UPDATE change_requests SET status = ?2, decided_by = ?3, decided_at = ?4, decision_reason = ?5 WHERE id = ?1",
            params![
                b(c.id),
                c.status.as_str(),
                c.decided_by,
                opt_us(c.decided_at),
                c.decision_reason
            ],
        )?;
        Ok(())
    }

    fn audit_head(&mut self) -> Result<ChainHead, StoreError> {
        match self.head {
            Some(h) => Ok(h),
            None => {
                let h = crate::read::audit_head(self.conn)?;
                self.head = Some(h);
                Ok(h)
            }
        }
    }

    fn insert_audit_record(&mut self, r: &AuditRecord) -> Result<(), StoreError> {
        let head = self.audit_head()?;
        if r.seq != head.seq + 1 || r.prev_hash.as_slice() != head.hash.as_slice() {
            return Err(StoreError::Internal(
                "audit record does not extend the chain head".into(),
            ));
        }
        let hash: [u8; 32] = r
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Internal("audit hash is not 32 bytes".into()))?;
        exec(
            self.conn,
            "INSERT INTO audit_events (seq, time_us, actor, action, target, outcome, request_id, source, details, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                i64::try_from(r.seq).map_err(|_| StoreError::Internal("seq overflow".into()))?,
                r.time_us,
                r.actor,
                r.action,
                r.target,
                r.outcome,
                r.request_id,
                r.source,
                r.details,
                r.prev_hash,
                r.hash
            ],
        )?;
        self.head = Some(ChainHead { seq: r.seq, hash });
        Ok(())
    }

    fn insert_finding(&mut self, f: &Finding) -> Result<(), StoreError> {
        exec(
            self.conn,
            "INSERT INTO findings (id, fingerprint, kind, rule, severity, repository, path, line, commit_id, author, \
             email, preview, suggested_owner, identity_id, identity_name, owner_name, credential_id, action, status, \
             status_reason, reported_by, first_seen, last_seen, times_seen, evidence, proposal) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
            params![
                b(f.id),
                f.fingerprint,
                f.kind.as_str(),
                f.rule,
                f.severity,
                f.repository,
                f.path,
                i64::try_from(f.line).unwrap_or(i64::MAX),
                f.commit,
                f.author,
                f.email,
                f.preview,
                f.suggested_owner,
                ob(f.identity_id),
                f.identity,
                f.owner,
                ob(f.credential_id),
                f.action,
                f.status.as_str(),
                f.status_reason,
                f.reported_by,
                to_us(f.first_seen),
                to_us(f.last_seen),
                i64::try_from(f.times_seen).unwrap_or(i64::MAX),
                f.evidence.as_ref().map(|e| e.to_string()),
                f.proposal
            ],
        )?;
        Ok(())
    }

    fn update_finding(&mut self, f: &Finding) -> Result<(), StoreError> {
        let n = exec(
            self.conn,
            "UPDATE findings SET path = ?2, line = ?3, commit_id = ?4, author = ?5, email = ?6, preview = ?7, \
             suggested_owner = ?8, action = ?9, status = ?10, status_reason = ?11, last_seen = ?12, times_seen = ?13, \
             severity = ?14, evidence = ?15, proposal = ?16 WHERE id = ?1",
            params![
                b(f.id),
                f.path,
                i64::try_from(f.line).unwrap_or(i64::MAX),
                f.commit,
                f.author,
                f.email,
                f.preview,
                f.suggested_owner,
                f.action,
                f.status.as_str(),
                f.status_reason,
                to_us(f.last_seen),
                i64::try_from(f.times_seen).unwrap_or(i64::MAX),
                f.severity,
                f.evidence.as_ref().map(|e| e.to_string()),
                f.proposal
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Internal(
                "finding to update does not exist".into(),
            ));
        }
        Ok(())
    }

    fn put_secret(&mut self, secret: &Secret) -> Result<(), StoreError> {
        let doc = serde_json::to_string(secret)
            .map_err(|e| StoreError::Internal(format!("encoding a secret: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO secrets (path, id, owner_id, due_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (path) DO UPDATE SET owner_id = excluded.owner_id, due_at = excluded.due_at,
             doc = excluded.doc",
            params![
                secret.path,
                b(secret.id),
                b(secret.owner_id),
                secret.due_at().map(to_us),
                doc
            ],
        )?;
        Ok(())
    }

    fn put_secret_envelope(
        &mut self,
        path: &str,
        version: u32,
        envelope: Option<&Envelope>,
    ) -> Result<(), StoreError> {
        match envelope {
            Some(e) => exec(
                self.conn,
                "INSERT OR REPLACE INTO secret_versions (path, version, key_id, wrapped_key, ciphertext) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![path, version, e.key_id, e.wrapped_key, e.ciphertext],
            )?,
            None => exec(
                self.conn,
                "DELETE FROM secret_versions WHERE path = ?1 AND version = ?2",
                params![path, version],
            )?,
        };
        Ok(())
    }

    fn put_vault_lease(&mut self, lease: &VaultLease) -> Result<(), StoreError> {
        let doc = serde_json::to_string(lease)
            .map_err(|e| StoreError::Internal(format!("encoding a lease: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO vault_leases (id, path, identity_id, revoked, due_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET revoked = excluded.revoked, due_at = excluded.due_at,
             doc = excluded.doc",
            params![
                b(lease.id),
                lease.path,
                ob(lease.identity_id),
                i64::from(lease.revoked_at.is_some()),
                lease.due_at().map(to_us),
                doc
            ],
        )?;
        Ok(())
    }

    fn put_trusted_issuer(&mut self, i: &TrustedIssuer) -> Result<(), StoreError> {
        let doc = serde_json::to_string(i)
            .map_err(|e| StoreError::Internal(format!("encoding an issuer: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO trusted_issuers (id, name, issuer, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, issuer = excluded.issuer,
             doc = excluded.doc",
            params![b(i.id), i.name, i.issuer, doc],
        )?;
        Ok(())
    }

    fn delete_trusted_issuer(&mut self, id: Uuid) -> Result<bool, StoreError> {
        Ok(exec(
            self.conn,
            "DELETE FROM trusted_issuers WHERE id = ?1",
            params![b(id)],
        )? == 1)
    }

    fn put_trust_rule(&mut self, r: &TrustRule) -> Result<(), StoreError> {
        let doc = serde_json::to_string(r)
            .map_err(|e| StoreError::Internal(format!("encoding a trust rule: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO trust_rules (id, issuer_id, identity_id, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            params![b(r.id), b(r.issuer_id), b(r.identity_id), doc],
        )?;
        Ok(())
    }

    fn put_policy(&mut self, p: &StoredPolicy) -> Result<(), StoreError> {
        let doc = serde_json::to_string(p)
            .map_err(|e| StoreError::Internal(format!("encoding a policy: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO policies (name, doc) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
            params![p.name, doc],
        )?;
        Ok(())
    }

    fn delete_policy(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(exec(
            self.conn,
            "DELETE FROM policies WHERE name = ?1",
            params![name],
        )? == 1)
    }

    fn put_mcp_server(&mut self, m: &McpServer) -> Result<(), StoreError> {
        let doc = serde_json::to_string(m)
            .map_err(|e| StoreError::Internal(format!("encoding an MCP server: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO mcp_servers (identity_id, doc) VALUES (?1, ?2)
             ON CONFLICT (identity_id) DO UPDATE SET doc = excluded.doc",
            params![b(m.identity_id), doc],
        )?;
        Ok(())
    }

    fn put_delegation(&mut self, d: &Delegation) -> Result<(), StoreError> {
        let doc = serde_json::to_string(d)
            .map_err(|e| StoreError::Internal(format!("encoding a delegation: {e}")))?;
        exec(
            self.conn,
            "INSERT INTO delegations (id, agent_id, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            params![b(d.id), b(d.agent_id), doc],
        )?;
        Ok(())
    }

    fn lease(&mut self, name: &str) -> Result<Option<Lease>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT holder, fence, expires_at FROM leases WHERE name = ?1")
            .and_then(|mut s| {
                s.query_map([name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .next()
                .transpose()
            })
            .map_err(db_err)?;
        let Some((holder, fence, expires)) = row else {
            return Ok(None);
        };
        Ok(Some(Lease {
            name: name.to_owned(),
            holder,
            fence: u64::try_from(fence)
                .map_err(|_| StoreError::Corrupt("negative lease fence".into()))?,
            expires_at: from_us(expires)?,
        }))
    }

    fn put_lease(&mut self, l: &Lease) -> Result<(), StoreError> {
        let fence =
            i64::try_from(l.fence).map_err(|_| StoreError::Internal("fence overflow".into()))?;
        exec(
            self.conn,
            "INSERT INTO leases (name, holder, fence, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, fence = excluded.fence,
             expires_at = excluded.expires_at",
            params![l.name, l.holder, fence, to_us(l.expires_at)],
        )?;
        Ok(())
    }

    fn after_commit(&mut self, effect: AfterCommit) {
        self.effects.push(effect);
    }
}
