//! Hygiene: the checks that keep the inventory honest without a person remembering to.
//!
//! A run reads the whole estate once (identities, credentials, teams, operators, the usage
//! aggregates the token service keeps), evaluates every rule, and reconciles the result with the
//! hygiene findings of earlier runs: a subject found again updates its finding (`last_seen`,
//! `times_seen`, fresh evidence; a resolved one reopens), a new one opens a finding, and an open
//! or acknowledged finding no longer found is resolved. Suppressed findings stay suppressed.
//! Findings are deduplicated by fingerprint `hygiene:<rule>:<subject id>`.
//!
//! Rules (thresholds in [`crate::policy::HygienePolicy`], `[hygiene]` in the config):
//!
//! | rule | subject | finds |
//! |---|---|---|
//! | `NHI-STALE` | identity | active, not used for `stale_after` (never used: since created) — propose retiring; suspended after `suspend_stale_after` when set |
//! | `NHI-ORPHAN` | identity | not retired, its owning team has no enabled operator |
//! | `NHI-UNUSED-SCOPE` | identity | active, older than `unused_scope_after`, holding scopes no token carried in that time — propose the used subset |
//! | `NHI-LONG-LIVED` | credential | an API key or client secret whose lifetime exceeds `long_lived` |
//! | `NHI-NO-EXPIRY` | credential | lifetime of at least `never_expires` (imported credentials that never expire) |
//! | `NHI-EXPIRING` | credential | expires within `expiring_within` and no newer usable credential of its identity outlives it |
//! | `NHI-REUSE` | credential | used from more than `reuse_networks` networks within `usage_window` |
//! | `NHI-ENV-MIX` | credential | used within `usage_window` from networks of another environment than its identity's |

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_types::{
    AuditOutcome, Credential, CredentialKind, Finding, FindingKind, FindingStatus, HygieneReport,
    Identity, IdentityStatus, JobState, RuleCount,
};

use super::Registry;
use crate::actor::Actor;
use crate::error::CoreError;
use crate::lifecycle::Transition;
use crate::ports::{FindingFilter, IdentityFilter, ReadStore};

/// The rules, in report order.
pub const RULES: [&str; 8] = [
    "NHI-STALE",
    "NHI-ORPHAN",
    "NHI-UNUSED-SCOPE",
    "NHI-LONG-LIVED",
    "NHI-NO-EXPIRY",
    "NHI-EXPIRING",
    "NHI-REUSE",
    "NHI-ENV-MIX",
];

/// The hygiene job's name (its durable state's key).
pub const HYGIENE_JOB: &str = "hygiene";

/// Findings written per store job.
const CHUNK: usize = 2_000;

/// One subject a rule found.
struct Hit {
    rule: &'static str,
    severity: &'static str,
    identity: Option<(Uuid, String, String)>,
    credential: Option<Uuid>,
    subject: Uuid,
    path: String,
    message: String,
    evidence: Value,
    proposal: Option<String>,
}

fn days(d: Duration) -> i64 {
    d.whole_days()
}

fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The environment whose networks hold a usage network (`a.b.c.0/24`: its first address).
fn environment_of(network: &str, map: &[(String, String)]) -> Option<String> {
    let ip: IpAddr = network.split_once('/')?.0.parse().ok()?;
    map.iter()
        .find(|(_, cidr)| in_cidr(ip, cidr))
        .map(|(env, _)| env.clone())
}

impl Registry {
    /// Runs every hygiene check now (admins; the scheduler runs it as the system). One run at a
    /// time per node; a second caller gets a conflict. The job's durable state records each run.
    pub async fn run_hygiene(
        &self,
        actor: &Actor,
        trigger: &str,
    ) -> Result<HygieneReport, CoreError> {
        if !(actor.is_admin() || matches!(actor.principal, crate::actor::Principal::System)) {
            return Err(CoreError::Forbidden(
                "only an admin may run the hygiene checks".into(),
            ));
        }
        let _guard = self.start_job(HYGIENE_JOB)?;
        let started = self.now();
        let trigger = trigger.to_owned();
        self.job_started(HYGIENE_JOB, started, &trigger).await?;
        let out = self.hygiene(actor, started).await;
        let finished = self.now();
        let (outcome, summary) = match &out {
            Ok(r) => ("ok", serde_json::to_value(r).unwrap_or(Value::Null)),
            Err(e) => ("failed", json!({ "error": e.to_string() })),
        };
        self.job_finished(HYGIENE_JOB, finished, outcome, summary)
            .await?;
        out
    }

    async fn hygiene(
        &self,
        actor: &Actor,
        started: OffsetDateTime,
    ) -> Result<HygieneReport, CoreError> {
        // Usage collected in memory so far counts; overdue access reviews are escalated.
        self.flush_usage().await?;
        self.escalate_reviews().await?;
        let p = self.policy.hygiene.clone();
        let now = started;
        let clock = std::time::Instant::now();

        // Read the estate once, in one snapshot.
        let store = self.snapshot()?;
        let operators = store.list_operators()?;
        let staffed: HashSet<String> = operators
            .iter()
            .filter(|o| o.disabled_at.is_none())
            .flat_map(|o| o.teams.iter().cloned())
            .collect();
        let identities: HashMap<Uuid, Identity> = every_identity(&*store)?
            .into_iter()
            .map(|i| (i.id, i))
            .collect();
        let credentials = every_credential(&*store)?;
        let mut scope_used: HashMap<Uuid, HashMap<String, OffsetDateTime>> = HashMap::new();
        for u in store.scope_usage()? {
            scope_used
                .entry(u.identity)
                .or_default()
                .insert(u.scope, u.last_used);
        }
        let mut sources: HashMap<Uuid, Vec<String>> = HashMap::new();
        for u in store.source_usage(now - p.usage_window)? {
            sources.entry(u.credential).or_default().push(u.network);
        }
        let hygiene = FindingFilter {
            kind: Some(FindingKind::Hygiene),
            ..Default::default()
        };
        // Only this job's own findings (access reviews file theirs under the same kind).
        let mut known: HashMap<String, Finding> = every_finding(&*store, &hygiene)?
            .into_iter()
            .filter(|f| f.fingerprint.starts_with("hygiene:"))
            .map(|f| (f.fingerprint.clone(), f))
            .collect();
        drop(store);

        let mut hits: Vec<Hit> = Vec::new();
        let who = |i: &Identity| {
            Some((
                i.id,
                format!("{}/{}", i.environment, i.name),
                i.owner.clone(),
            ))
        };
        let ipath = |i: &Identity| format!("identity/{}/{}", i.environment, i.name);
        for i in identities.values() {
            if i.status == IdentityStatus::Retired {
                continue;
            }
            let active = i.status == IdentityStatus::Active;
            // NHI-STALE
            let last = i.last_used_at.unwrap_or(i.created_at);
            if active && now - last >= p.stale_after {
                let idle = days(now - last);
                hits.push(Hit {
                    rule: "NHI-STALE",
                    severity: "medium",
                    identity: who(i),
                    credential: None,
                    subject: i.id,
                    path: ipath(i),
                    message: match i.last_used_at {
                        Some(_) => format!("not used for {idle} days"),
                        None => format!("never used in the {idle} days since it was created"),
                    },
                    evidence: json!({ "last_used_at": i.last_used_at.map(|t| t.unix_timestamp()),
                                      "created_at": i.created_at.unix_timestamp(),
                                      "days_unused": idle }),
                    proposal: Some("retire (decommission) it, or record why it must stay".into()),
                });
            }
            // NHI-ORPHAN
            if !staffed.contains(&i.owner) {
                hits.push(Hit {
                    rule: "NHI-ORPHAN",
                    severity: "high",
                    identity: who(i),
                    credential: None,
                    subject: i.id,
                    path: ipath(i),
                    message: format!("its owning team {:?} has no active member", i.owner),
                    evidence: json!({ "team": i.owner }),
                    proposal: Some(
                        "give the team an owner, move the identity to a staffed team, or retire it"
                            .into(),
                    ),
                });
            }
            // NHI-UNUSED-SCOPE
            if active && now - i.created_at >= p.unused_scope_after && !i.scopes.is_empty() {
                let used = scope_used.get(&i.id);
                let recent = |s: &String| {
                    used.and_then(|m| m.get(s))
                        .is_some_and(|t| now - *t < p.unused_scope_after)
                };
                let unused: Vec<&String> = i.scopes.iter().filter(|s| !recent(s)).collect();
                // Wholly unused identities are NHI-STALE's; this rule is about right-sizing.
                if !unused.is_empty() && unused.len() < i.scopes.len() {
                    let keep: Vec<&String> = i.scopes.iter().filter(|s| recent(s)).collect();
                    hits.push(Hit {
                        rule: "NHI-UNUSED-SCOPE",
                        severity: if i.privileged { "high" } else { "low" },
                        identity: who(i),
                        credential: None,
                        subject: i.id,
                        path: ipath(i),
                        message: format!(
                            "{} of {} granted scopes unused for {} days",
                            unused.len(),
                            i.scopes.len(),
                            days(p.unused_scope_after)
                        ),
                        evidence: json!({ "unused": unused, "used": keep }),
                        proposal: Some(format!(
                            "reduce scopes to: {}",
                            keep.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(" ")
                        )),
                    });
                }
            }
        }

        // Credentials: the newest usable expiry per identity (for NHI-EXPIRING).
        let usable = |c: &Credential| c.revoked_at.is_none() && c.expires_at > now;
        let mut newest: HashMap<Uuid, OffsetDateTime> = HashMap::new();
        for c in credentials.iter().filter(|c| usable(c)) {
            let e = newest.entry(c.identity_id).or_insert(c.expires_at);
            if c.expires_at > *e {
                *e = c.expires_at;
            }
        }
        let mut checked_credentials = 0u64;
        for c in credentials.iter().filter(|c| usable(c)) {
            let Some(i) = identities.get(&c.identity_id) else {
                continue;
            };
            if i.status == IdentityStatus::Retired {
                continue;
            }
            checked_credentials += 1;
            let cpath = format!("{}/credential/{}", ipath(i), c.id);
            let lifetime = c.expires_at - c.created_at;
            let secret = matches!(
                c.kind,
                CredentialKind::ApiKey | CredentialKind::ClientSecret
            );
            let mut hit = |rule, severity, message: String, evidence: Value, proposal: &str| {
                hits.push(Hit {
                    rule,
                    severity,
                    identity: who(i),
                    credential: Some(c.id),
                    subject: c.id,
                    path: cpath.clone(),
                    message,
                    evidence,
                    proposal: Some(proposal.to_owned()),
                });
            };
            if lifetime >= p.never_expires {
                hit(
                    "NHI-NO-EXPIRY",
                    "high",
                    format!(
                        "{} that effectively never expires ({} days)",
                        c.kind.as_str(),
                        days(lifetime)
                    ),
                    json!({ "kind": c.kind.as_str(), "lifetime_days": days(lifetime) }),
                    "replace it with a short-lived credential (private_key_jwt, federation) and revoke it",
                );
            } else if secret && lifetime > p.long_lived {
                hit(
                    "NHI-LONG-LIVED",
                    "medium",
                    format!("{} lives {} days", c.kind.as_str(), days(lifetime)),
                    json!({ "kind": c.kind.as_str(), "lifetime_days": days(lifetime) }),
                    "rotate it to a shorter lifetime, or move to private_key_jwt",
                );
            }
            if c.expires_at - now <= p.expiring_within
                && newest
                    .get(&c.identity_id)
                    .is_none_or(|n| *n <= c.expires_at)
            {
                hit(
                    "NHI-EXPIRING",
                    "low",
                    format!(
                        "expires in {} days and nothing replaces it",
                        days(c.expires_at - now)
                    ),
                    json!({ "expires_at": c.expires_at.unix_timestamp() }),
                    "rotate it before it expires",
                );
            }
            if let Some(nets) = sources.get(&c.id) {
                let distinct: BTreeSet<&String> = nets.iter().collect();
                if distinct.len() > p.reuse_networks {
                    hit(
                        "NHI-REUSE",
                        "high",
                        format!(
                            "used from {} networks in {} days",
                            distinct.len(),
                            days(p.usage_window)
                        ),
                        json!({ "networks": distinct }),
                        "give each workload its own identity; rotate this credential",
                    );
                }
                if !p.environment_networks.is_empty() {
                    let mut foreign: BTreeMap<String, Vec<&String>> = BTreeMap::new();
                    for n in &distinct {
                        if let Some(env) = environment_of(n, &p.environment_networks)
                            && env != i.environment
                        {
                            foreign.entry(env).or_default().push(n);
                        }
                    }
                    if !foreign.is_empty() {
                        hit(
                            "NHI-ENV-MIX",
                            "high",
                            format!(
                                "a {} credential used from {} networks",
                                i.environment,
                                foreign.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                            json!({ "environment": i.environment, "foreign": foreign }),
                            "issue a separate identity per environment; rotate this credential",
                        );
                    }
                }
            }
        }

        // Reconcile with the findings of earlier runs.
        let mut counts: BTreeMap<&str, (u64, u64)> = RULES.iter().map(|r| (*r, (0, 0))).collect();
        let mut writes: Vec<Finding> = Vec::new();
        let mut inserts: Vec<Finding> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut stale_due: Vec<(Uuid, String)> = Vec::new();
        for h in hits {
            let fingerprint = format!("hygiene:{}:{}", h.rule, h.subject);
            seen.insert(fingerprint.clone());
            let c = counts.entry(h.rule).or_default();
            c.0 += 1;
            let (identity_id, identity, owner) = match h.identity {
                Some((id, name, owner)) => (Some(id), Some(name), Some(owner)),
                None => (None, None, None),
            };
            match known.remove(&fingerprint) {
                Some(mut f) => {
                    f.last_seen = now;
                    f.times_seen += 1;
                    f.preview = h.message;
                    f.evidence = Some(h.evidence);
                    f.proposal = h.proposal;
                    f.severity = h.severity.into();
                    if f.status == FindingStatus::Resolved {
                        f.status = FindingStatus::Open;
                        f.status_reason = Some("found again by a hygiene run".into());
                    }
                    if h.rule == "NHI-STALE"
                        && f.status == FindingStatus::Open
                        && p.suspend_stale_after
                            .is_some_and(|g| now - f.first_seen >= g)
                        && let Some(id) = identity_id
                    {
                        stale_due.push((id, identity.clone().unwrap_or_default()));
                    }
                    writes.push(f);
                }
                None => {
                    c.1 += 1;
                    inserts.push(Finding {
                        id: Uuid::now_v7(),
                        fingerprint,
                        kind: FindingKind::Hygiene,
                        rule: h.rule.into(),
                        severity: h.severity.into(),
                        repository: None,
                        path: h.path,
                        line: 0,
                        commit: None,
                        author: None,
                        email: None,
                        preview: h.message,
                        suggested_owner: owner.clone(),
                        identity_id,
                        identity,
                        owner,
                        credential_id: h.credential,
                        action: None,
                        status: FindingStatus::Open,
                        status_reason: None,
                        reported_by: "hygiene".into(),
                        first_seen: now,
                        last_seen: now,
                        times_seen: 1,
                        evidence: Some(h.evidence),
                        proposal: h.proposal,
                    });
                }
            }
        }
        // What earlier runs found and this one did not is resolved.
        let mut resolved = 0u64;
        for (_, mut f) in known {
            if matches!(f.status, FindingStatus::Open | FindingStatus::Acknowledged) {
                f.status = FindingStatus::Resolved;
                f.status_reason = Some("no longer found by the hygiene checks".into());
                resolved += 1;
                writes.push(f);
            }
        }
        let checked_identities = u64::try_from(identities.len()).unwrap_or(u64::MAX);
        drop(identities);
        while !inserts.is_empty() || !writes.is_empty() {
            let ins: Vec<Finding> = inserts.drain(..inserts.len().min(CHUNK)).collect();
            let upd: Vec<Finding> = writes.drain(..writes.len().min(CHUNK)).collect();
            self.write(move |tx, _| {
                for f in &ins {
                    tx.insert_finding(f)?;
                }
                for f in &upd {
                    tx.update_finding(f)?;
                }
                Ok(())
            })
            .await?;
        }
        // Identities stale past the grace period are suspended (where the policy says so).
        let mut suspended = Vec::new();
        for (id, name) in stale_due {
            let reason = format!(
                "unused past the grace period (hygiene rule NHI-STALE, {} days)",
                p.suspend_stale_after.map(days).unwrap_or(0)
            );
            match self
                .transition(
                    &Actor::system(actor.request_id.clone()),
                    &id.to_string(),
                    Transition::Suspend,
                    Some(reason),
                )
                .await
            {
                Ok(_) => suspended.push(name),
                Err(e) => {
                    tracing::warn!(identity = %id, error = %e, "hygiene could not suspend a stale identity")
                }
            }
        }
        let report = HygieneReport {
            started_at: started,
            duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
            identities: checked_identities,
            credentials: checked_credentials,
            rules: counts
                .into_iter()
                .map(|(rule, (found, opened))| RuleCount {
                    rule: rule.into(),
                    found,
                    opened,
                })
                .collect(),
            resolved,
            suspended,
        };
        let (actor, details) = (
            actor.clone(),
            serde_json::to_value(&report).unwrap_or(Value::Null),
        );
        self.write(move |tx, job| {
            job.record(
                tx,
                &actor,
                "hygiene.run",
                "job:hygiene".into(),
                AuditOutcome::Success,
                details,
            )
        })
        .await?;
        Ok(report)
    }

    /// Marks a job as running on this node; the guard clears it. A second start conflicts.
    fn start_job(&self, job: &'static str) -> Result<JobGuard<'_>, CoreError> {
        let mut running = self
            .running_jobs
            .lock()
            .map_err(|_| CoreError::InvalidState("job registry poisoned".into()))?;
        if !running.insert(job) {
            return Err(CoreError::InvalidState(format!(
                "a {job} run is already in progress"
            )));
        }
        Ok(JobGuard { reg: self, job })
    }

    async fn job_started(
        &self,
        job: &str,
        at: OffsetDateTime,
        trigger: &str,
    ) -> Result<(), CoreError> {
        let (job, trigger) = (job.to_owned(), trigger.to_owned());
        self.write(move |tx, _| {
            let mut s = tx.job_state(&job)?.unwrap_or_else(|| JobState {
                job: job.clone(),
                ..Default::default()
            });
            s.runs += 1;
            s.last_started_at = Some(at);
            s.last_trigger = Some(trigger);
            tx.put_job_state(&s)?;
            Ok(())
        })
        .await
    }

    async fn job_finished(
        &self,
        job: &str,
        at: OffsetDateTime,
        outcome: &str,
        summary: Value,
    ) -> Result<(), CoreError> {
        let (job, outcome) = (job.to_owned(), outcome.to_owned());
        self.write(move |tx, _| {
            let mut s = tx.job_state(&job)?.unwrap_or_else(|| JobState {
                job: job.clone(),
                ..Default::default()
            });
            s.last_finished_at = Some(at);
            s.last_outcome = Some(outcome);
            s.last_summary = Some(summary);
            tx.put_job_state(&s)?;
            Ok(())
        })
        .await
    }

    /// Whether a scheduled job is due: its next scheduled time after its last start (or, if it
    /// never ran, after `since`) has come. A job running on this node is not due.
    pub fn job_due(
        &self,
        job: &str,
        cron: &crate::cron::Cron,
        since: OffsetDateTime,
    ) -> Result<bool, CoreError> {
        if self
            .running_jobs
            .lock()
            .map_err(|_| CoreError::InvalidState("job registry poisoned".into()))?
            .contains(job)
        {
            return Ok(false);
        }
        let last = self
            .reader()?
            .job_state(job)?
            .and_then(|s| s.last_started_at)
            .unwrap_or(since);
        Ok(cron.next_after(last).is_some_and(|next| next <= self.now()))
    }

    /// Every background job's durable state (admins and auditors).
    pub fn list_jobs(&self, actor: &Actor) -> Result<Vec<JobState>, CoreError> {
        if !actor.can_read_audit() {
            return Err(CoreError::Forbidden(
                "job states are for admins and auditors".into(),
            ));
        }
        Ok(self.reader()?.list_job_states()?)
    }
}

/// Pages of the whole estate, read in one snapshot by the governance jobs.
const PAGE: usize = 5_000;

/// Every identity (retired ones included), by id.
pub(crate) fn every_identity(store: &dyn ReadStore) -> Result<Vec<Identity>, CoreError> {
    let mut out = Vec::new();
    loop {
        let page = store.list_identities(
            &IdentityFilter::default(),
            out.last().map(|i: &Identity| i.id),
            PAGE,
        )?;
        let full = page.len() == PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Every credential (revoked ones included), by id.
pub(crate) fn every_credential(store: &dyn ReadStore) -> Result<Vec<Credential>, CoreError> {
    let mut out = Vec::new();
    loop {
        let page = store.list_credentials(out.last().map(|c: &Credential| c.id), PAGE)?;
        let full = page.len() == PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Every finding matching `filter`, by id.
pub(crate) fn every_finding(
    store: &dyn ReadStore,
    filter: &FindingFilter,
) -> Result<Vec<Finding>, CoreError> {
    let mut out = Vec::new();
    loop {
        let page = store.list_findings(filter, out.last().map(|f: &Finding| f.id), PAGE)?;
        let full = page.len() == PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Clears a job's running mark when its run ends, however it ends.
pub(crate) struct JobGuard<'a> {
    reg: &'a Registry,
    job: &'static str,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.reg.running_jobs.lock() {
            r.remove(self.job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_map_to_environments_by_cidr() {
        let map = vec![
            ("prod".to_owned(), "10.1.0.0/16".to_owned()),
            ("staging".to_owned(), "10.2.0.0/16".to_owned()),
        ];
        assert_eq!(environment_of("10.1.7.0/24", &map).as_deref(), Some("prod"));
        assert_eq!(
            environment_of("10.2.0.0/24", &map).as_deref(),
            Some("staging")
        );
        assert_eq!(environment_of("10.3.0.0/24", &map), None);
        assert_eq!(environment_of("garbage", &map), None);
    }
}
