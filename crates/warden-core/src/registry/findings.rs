//! Findings of `warden scan --report-to`: leaked and unmanaged secrets become inventory records.
//!
//! A finding is deduplicated by its fingerprint (rule, path, secret — computed by the scanner, so
//! the server never needs the secret). The one exception is Warden's own secrets: the report
//! carries them so the server can recognise the credential by its keyed hash, exactly as it
//! authenticates it; a live one is revoked at once (or flagged, per policy) in the same
//! transaction, and the finding names its identity and owning team. The secret is never stored.

use serde_json::json;
use uuid::Uuid;
use warden_types::{
    AuditOutcome, Finding, FindingKind, FindingStatus, FindingsReported, ReportFindingsRequest,
    UpdateFindingRequest,
};

use super::Registry;
use crate::actor::{Actor, Principal};
use crate::error::CoreError;
use crate::ports::FindingFilter;

/// Most findings in one report.
pub const MAX_FINDINGS_PER_REPORT: usize = 1_000;

fn field_err(field: &str, reason: &str) -> CoreError {
    CoreError::field(field, reason)
}

fn text(field: &str, v: &str, max: usize) -> Result<(), CoreError> {
    if v.chars().count() > max {
        return Err(field_err(field, &format!("at most {max} characters")));
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(field_err(
            field,
            "must be a single line without control characters",
        ));
    }
    Ok(())
}

fn may_report(actor: &Actor) -> bool {
    match &actor.principal {
        Principal::Operator { role, .. } => *role != warden_types::OperatorRole::Auditor,
        Principal::Identity { token_scopes, .. } => token_scopes
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s == "warden:findings")),
        _ => false,
    }
}

impl Registry {
    /// Records findings (creating or updating by fingerprint) and acts on leaked Warden
    /// credentials. Operators (not auditors) and identities with a `warden:findings` token may
    /// report.
    pub async fn report_findings(
        &self,
        actor: &Actor,
        req: ReportFindingsRequest,
    ) -> Result<FindingsReported, CoreError> {
        if !may_report(actor) {
            return Err(CoreError::Forbidden(
                "reporting findings needs an admin or member operator, or a token with warden:findings"
                    .into(),
            ));
        }
        if req.findings.len() > MAX_FINDINGS_PER_REPORT {
            return Err(field_err(
                "findings",
                &format!("at most {MAX_FINDINGS_PER_REPORT} per request"),
            ));
        }
        // Everything that needs no database is checked first; secrets become keyed hashes here.
        let mut checked = Vec::with_capacity(req.findings.len());
        for (i, f) in req.findings.into_iter().enumerate() {
            let at = |name: &str| format!("findings[{i}].{name}");
            if f.fingerprint.is_empty()
                || f.fingerprint.len() > 64
                || !f.fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(field_err(&at("fingerprint"), "1 to 64 hex digits"));
            }
            if !matches!(f.severity.as_str(), "critical" | "high" | "medium" | "low") {
                return Err(field_err(&at("severity"), "critical, high, medium or low"));
            }
            text(&at("rule"), &f.rule, 100)?;
            text(&at("path"), &f.path, 1024)?;
            text(&at("preview"), &f.preview, 512)?;
            for (name, v, max) in [
                ("repository", &f.repository, 512),
                ("commit", &f.commit, 64),
                ("author", &f.author, 256),
                ("email", &f.email, 256),
                ("suggested_owner", &f.suggested_owner, 256),
            ] {
                if let Some(v) = v {
                    text(&at(name), v, max)?;
                }
            }
            // Only a well-formed Warden secret is looked up; anything else is dropped unread.
            let hash = f
                .secret
                .as_deref()
                .filter(|s| warden_crypto::token::parse(s).is_ok())
                .map(|s| self.secret_hasher.hash(s.as_bytes()));
            checked.push((f, hash));
        }
        let actor = actor.clone();
        let revoke = self.policy.revoke_leaked_credentials;
        self.write_invalidating(move |tx, job| {
            let now = job.now();
            let mut out = FindingsReported {
                created: 0,
                updated: 0,
                revoked: 0,
                items: Vec::new(),
            };
            for (f, hash) in checked {
                let leaked = match &hash {
                    Some(h) => tx.credential_by_secret_hash(h)?,
                    None => None,
                };
                let identity = match &leaked {
                    Some(c) => tx.identity(c.identity_id)?,
                    None => None,
                };
                let existing = tx.finding_by_fingerprint(&f.fingerprint)?;
                let mut finding = match existing {
                    Some(mut e) => {
                        e.path = f.path;
                        e.line = f.line;
                        e.commit = f.commit;
                        e.author = f.author;
                        e.email = f.email;
                        e.preview = f.preview;
                        e.suggested_owner = f.suggested_owner.or(e.suggested_owner);
                        e.last_seen = now;
                        e.times_seen += 1;
                        if e.status == FindingStatus::Resolved {
                            e.status = FindingStatus::Open;
                            e.status_reason = Some("seen again after it was resolved".into());
                        }
                        out.updated += 1;
                        e
                    }
                    None => {
                        let finding = Finding {
                            id: Uuid::now_v7(),
                            fingerprint: f.fingerprint,
                            kind: if leaked.is_some() {
                                FindingKind::WardenCredential
                            } else {
                                FindingKind::Unmanaged
                            },
                            rule: f.rule,
                            severity: f.severity,
                            repository: f.repository,
                            path: f.path,
                            line: f.line,
                            commit: f.commit,
                            author: f.author.clone(),
                            email: f.email.clone(),
                            preview: f.preview,
                            suggested_owner: f
                                .suggested_owner
                                .or_else(|| f.email.clone().or(f.author.clone())),
                            identity_id: identity.as_ref().map(|i| i.id),
                            identity: identity.as_ref().map(|i| i.name.clone()),
                            owner: identity.as_ref().map(|i| i.owner.clone()),
                            credential_id: leaked.as_ref().map(|c| c.id),
                            action: None,
                            status: FindingStatus::Open,
                            status_reason: None,
                            reported_by: actor.label(),
                            first_seen: now,
                            last_seen: now,
                            times_seen: 1,
                            evidence: None,
                            proposal: None,
                        };
                        tx.insert_finding(&finding)?;
                        job.record(
                            tx,
                            &actor,
                            "finding.created",
                            format!("finding:{}", finding.id),
                            AuditOutcome::Success,
                            json!({
                                "rule": finding.rule, "kind": finding.kind, "path": finding.path,
                                "repository": finding.repository, "commit": finding.commit,
                                "identity": finding.identity_id.map(|i| i.to_string()),
                            }),
                        )?;
                        out.created += 1;
                        finding
                    }
                };
                // A live Warden credential: revoke (or flag) now.
                if let Some(mut c) = leaked {
                    if c.revoked_at.is_some() {
                        finding
                            .action
                            .get_or_insert_with(|| "already_revoked".into());
                    } else if revoke {
                        c.revoked_at = Some(now);
                        c.revoke_reason =
                            Some(format!("leaked: found by warden scan in {}", finding.path));
                        tx.update_credential(&c)?;
                        job.record(
                            tx,
                            &actor,
                            "credential.revoke",
                            format!("credential:{}", c.id),
                            AuditOutcome::Success,
                            json!({
                                "identity": c.identity_id.to_string(),
                                "reason": "leaked",
                                "finding": finding.id.to_string(),
                            }),
                        )?;
                        finding.action = Some("revoked".into());
                        out.revoked += 1;
                    } else {
                        finding.action = Some("flagged".into());
                    }
                }
                tx.update_finding(&finding)?;
                out.items.push(finding);
            }
            Ok(out)
        })
        .await
    }

    /// Findings, for admins and auditors.
    pub fn list_findings(
        &self,
        actor: &Actor,
        filter: &FindingFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Finding>, CoreError> {
        if !actor.can_read_audit() {
            return Err(CoreError::Forbidden(
                "listing findings needs the admin or auditor role".into(),
            ));
        }
        Ok(self.reader()?.list_findings(filter, after, limit)?)
    }

    /// Acknowledges, resolves or suppresses a finding (admins); suppressing needs a reason.
    pub async fn update_finding(
        &self,
        actor: &Actor,
        id: Uuid,
        req: UpdateFindingRequest,
    ) -> Result<Finding, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "only an admin may change a finding's status".into(),
            ));
        }
        let reason = crate::validate::reason("reason", req.reason.as_deref(), false)?;
        if req.status == FindingStatus::Suppressed && reason.is_none() {
            return Err(field_err("reason", "suppressing a finding needs a reason"));
        }
        let actor = actor.clone();
        self.write(move |tx, job| {
            let mut f = tx
                .finding(id)?
                .ok_or_else(|| CoreError::NotFound(format!("finding {id}")))?;
            let from = f.status;
            f.status = req.status;
            f.status_reason = reason.clone();
            tx.update_finding(&f)?;
            job.record(
                tx,
                &actor,
                "finding.status",
                format!("finding:{id}"),
                AuditOutcome::Success,
                json!({ "from": from, "to": f.status, "reason": reason }),
            )?;
            Ok(f)
        })
        .await
    }
}
