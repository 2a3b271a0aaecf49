//! Usage anomalies at the token endpoint: every issued token is scored against its identity's
//! baseline ([`crate::anomaly`]) and checked for signs of a person using a machine's credential;
//! what is unusual becomes a finding (kind `anomaly`) and an `anomaly.detected` audit event —
//! which the audit sinks deliver, so a webhook sink filtered to `anomaly.*` is the notification.
//!
//! | rule | what | deduplicated per |
//! |---|---|---|
//! | `NHI-ANOMALY-SCOPE` | a scope the identity never carried before | identity and scope |
//! | `NHI-ANOMALY-AUDIENCE` | an audience (resource) the identity never addressed before | identity and audience |
//! | `NHI-ANOMALY-NETWORK` | a source network never seen for the identity | identity and network |
//! | `NHI-ANOMALY-VOLUME` | an hour's volume over median + 6 MAD of its own hours | identity and day |
//! | `NHI-ANOMALY-WINDOW` | use outside the identity's `schedule` label (`08-18`, UTC hours) | identity and day |
//! | `NHI-INTERACTIVE` | a browser or interactive API tool `User-Agent`, or a human network | identity and day |
//!
//! Scoring happens under one mutex in memory (about 0.5 µs an event); findings are written with
//! the usage aggregates, once a second ([`Registry::flush_usage`]). Baselines are saved per node
//! ([`Registry::save_anomaly_baselines`], every minute and at shutdown) and restored at start.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_types::{AuditOutcome, Finding, FindingKind, FindingStatus, Identity};

use super::Registry;
use super::tokens::in_cidr;
use crate::actor::Actor;
use crate::anomaly::{Anomaly, Baselines, Event};
use crate::error::CoreError;
use crate::policy::AnomalyPolicy;
use crate::ports::WriteTx;

/// Most distinct alerts held between flushes (beyond: counted as dropped and logged).
const MAX_ALERTS: usize = 10_000;

/// The label that bounds when a schedule-bound identity works: `HH-HH`, UTC hours, `[from, to)`.
pub const SCHEDULE_LABEL: &str = "schedule";

/// One unusual thing, waiting for the next flush. Repeats (same fingerprint) are folded.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    fingerprint: String,
    rule: &'static str,
    severity: &'static str,
    identity: Uuid,
    /// `environment/name`.
    name: String,
    owner: String,
    credential: Option<Uuid>,
    first: OffsetDateTime,
    last: OffsetDateTime,
    times: u64,
    preview: String,
    evidence: Value,
}

#[derive(Debug)]
struct WatchState {
    baselines: Baselines,
    alerts: Vec<Alert>,
    by_fingerprint: HashMap<String, usize>,
    /// Identities whose baseline changed since the last save.
    dirty: HashSet<Uuid>,
    dropped: u64,
}

/// Baselines and pending alerts of this node.
#[derive(Debug)]
pub struct AnomalyWatch {
    policy: AnomalyPolicy,
    state: Mutex<WatchState>,
}

/// A token issued: what the watch is told.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    pub identity: &'a Identity,
    pub credential: Option<Uuid>,
    pub scopes: &'a [String],
    pub audiences: &'a [String],
    pub source: &'a str,
    pub user_agent: Option<&'a str>,
    pub at: OffsetDateTime,
}

/// Parses a `schedule` label: `HH-HH` with hours 0–24, from ≠ to.
pub fn parse_window(v: &str) -> Option<(u8, u8)> {
    let (a, b) = v.trim().split_once('-')?;
    let from: u8 = a.trim().parse().ok()?;
    let to: u8 = b.trim().parse().ok()?;
    (from <= 24 && to <= 24 && from % 24 != to % 24).then_some((from % 24, to % 24))
}

impl AnomalyWatch {
    pub fn new(policy: AnomalyPolicy) -> Self {
        let learning = policy.learning.whole_seconds();
        AnomalyWatch {
            policy,
            state: Mutex::new(WatchState {
                baselines: Baselines::new(learning),
                alerts: Vec::new(),
                by_fingerprint: HashMap::new(),
                dirty: HashSet::new(),
                dropped: 0,
            }),
        }
    }

    /// Scores one use; alerts wait for the next flush.
    /// Scores one use from `network` (the source's, see `source_network`).
    pub(crate) fn observe(&self, u: &Use<'_>, network: Option<&str>) {
        if !self.policy.enabled {
            return;
        }
        let window = u
            .identity
            .labels
            .get(SCHEDULE_LABEL)
            .and_then(|v| parse_window(v));
        let interactive = self.interactive(u);
        let at = u.at.unix_timestamp();
        let mut found = Vec::new();
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.baselines.observe(
            &Event {
                identity: u.identity.id,
                scopes: u.scopes,
                audiences: u.audiences,
                network,
                at,
                window,
            },
            &mut found,
        );
        st.dirty.insert(u.identity.id);
        if found.is_empty() && interactive.is_none() {
            return;
        }
        let day = u.at.date();
        for a in found {
            let (fingerprint, rule, severity, preview, evidence) = match a {
                Anomaly::NewScope { index } => {
                    let scope = u.scopes.get(usize::from(index)).map_or("", String::as_str);
                    (
                        format!("anomaly:NHI-ANOMALY-SCOPE:{}:{scope}", u.identity.id),
                        "NHI-ANOMALY-SCOPE",
                        "medium",
                        format!("first token carrying scope {scope}"),
                        json!({ "scope": scope, "source": u.source }),
                    )
                }
                Anomaly::NewAudience { index } => {
                    let aud = u
                        .audiences
                        .get(usize::from(index))
                        .map_or("", String::as_str);
                    (
                        format!("anomaly:NHI-ANOMALY-AUDIENCE:{}:{aud}", u.identity.id),
                        "NHI-ANOMALY-AUDIENCE",
                        "medium",
                        format!("first token for audience {aud}"),
                        json!({ "audience": aud, "source": u.source }),
                    )
                }
                Anomaly::NewNetwork => {
                    let net = network.unwrap_or("");
                    (
                        format!("anomaly:NHI-ANOMALY-NETWORK:{}:{net}", u.identity.id),
                        "NHI-ANOMALY-NETWORK",
                        "medium",
                        format!("first use from network {net}"),
                        json!({ "network": net, "source": u.source }),
                    )
                }
                Anomaly::VolumeSpike { count, bound } => (
                    format!("anomaly:NHI-ANOMALY-VOLUME:{}:{day}", u.identity.id),
                    "NHI-ANOMALY-VOLUME",
                    "medium",
                    format!("{count} tokens in an hour, above its usual bound of {bound}"),
                    json!({ "count": count, "bound": bound, "hour": at.div_euclid(3600) * 3600 }),
                ),
                Anomaly::OutsideWindow { hour } => (
                    format!("anomaly:NHI-ANOMALY-WINDOW:{}:{day}", u.identity.id),
                    "NHI-ANOMALY-WINDOW",
                    "medium",
                    format!("used at {hour:02}:00 UTC, outside its schedule"),
                    json!({ "hour": hour, "schedule": u.identity.labels.get(SCHEDULE_LABEL) }),
                ),
            };
            st.alert(u, fingerprint, rule, severity, preview, evidence);
        }
        if let Some(why) = interactive {
            st.alert(
                u,
                format!("anomaly:NHI-INTERACTIVE:{}:{day}", u.identity.id),
                "NHI-INTERACTIVE",
                "high",
                format!("token requested {why}: a person using a machine's credential?"),
                json!({ "why": why, "source": u.source, "user_agent": u.user_agent }),
            );
        }
    }

    /// Why the request looks like a person's, if it does.
    fn interactive(&self, u: &Use<'_>) -> Option<String> {
        if let Some(ua) = u.user_agent
            && let Some(p) = self
                .policy
                .interactive_agents
                .iter()
                .find(|p| ua.starts_with(p.as_str()))
        {
            return Some(format!("by an interactive client ({p})"));
        }
        let ip = u.source.parse().ok()?;
        self.policy
            .human_networks
            .iter()
            .find(|n| in_cidr(ip, n))
            .map(|n| format!("from a human network ({n})"))
    }

    pub(crate) fn take_alerts(&self) -> (Vec<Alert>, u64) {
        let Ok(mut st) = self.state.lock() else {
            return (Vec::new(), 0);
        };
        st.by_fingerprint.clear();
        let dropped = std::mem::take(&mut st.dropped);
        (std::mem::take(&mut st.alerts), dropped)
    }

    fn take_dirty(&self) -> Vec<(Uuid, Vec<u8>)> {
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        let dirty = std::mem::take(&mut st.dirty);
        dirty
            .into_iter()
            .filter_map(|id| st.baselines.encode(id).map(|b| (id, b)))
            .collect()
    }

    /// How many identities have a baseline.
    pub fn baselines(&self) -> usize {
        self.state.lock().map(|s| s.baselines.len()).unwrap_or(0)
    }
}

impl WatchState {
    fn alert(
        &mut self,
        u: &Use<'_>,
        fingerprint: String,
        rule: &'static str,
        severity: &'static str,
        preview: String,
        evidence: Value,
    ) {
        if let Some(&i) = self.by_fingerprint.get(&fingerprint) {
            let a = &mut self.alerts[i];
            a.last = u.at;
            a.times += 1;
            return;
        }
        if self.alerts.len() >= MAX_ALERTS {
            self.dropped += 1;
            return;
        }
        self.by_fingerprint
            .insert(fingerprint.clone(), self.alerts.len());
        self.alerts.push(Alert {
            fingerprint,
            rule,
            severity,
            identity: u.identity.id,
            name: format!("{}/{}", u.identity.environment, u.identity.name),
            owner: u.identity.owner.clone(),
            credential: u.credential,
            first: u.at,
            last: u.at,
            times: 1,
            preview,
            evidence,
        });
    }
}

/// Writes alerts as findings: a new fingerprint opens a finding and records `anomaly.detected`;
/// a known one is seen again (a resolved one reopens; suppressed stays suppressed).
pub(crate) fn write_alerts(
    tx: &mut dyn WriteTx,
    job: &super::Job,
    alerts: &[Alert],
) -> Result<usize, CoreError> {
    let system = Actor::system("anomaly");
    let mut opened = 0;
    for a in alerts {
        if let Some(mut f) = tx.finding_by_fingerprint(&a.fingerprint)? {
            f.last_seen = a.last.max(f.last_seen);
            f.times_seen = f.times_seen.saturating_add(a.times);
            if f.status == FindingStatus::Resolved {
                f.status = FindingStatus::Open;
                f.status_reason = Some("seen again".into());
            }
            tx.update_finding(&f)?;
            continue;
        }
        tx.insert_finding(&Finding {
            id: Uuid::now_v7(),
            fingerprint: a.fingerprint.clone(),
            kind: FindingKind::Anomaly,
            rule: a.rule.into(),
            severity: a.severity.into(),
            repository: None,
            path: format!("identity/{}", a.name),
            line: 0,
            commit: None,
            author: None,
            email: None,
            preview: a.preview.clone(),
            suggested_owner: Some(a.owner.clone()),
            identity_id: Some(a.identity),
            identity: Some(a.name.clone()),
            owner: Some(a.owner.clone()),
            credential_id: a.credential,
            action: None,
            status: FindingStatus::Open,
            status_reason: None,
            reported_by: "anomaly".into(),
            first_seen: a.first,
            last_seen: a.last,
            times_seen: a.times,
            evidence: Some(a.evidence.clone()),
            proposal: Some(
                "confirm with the owning team; if nobody expected it, revoke the credential".into(),
            ),
        })?;
        job.record(
            tx,
            &system,
            "anomaly.detected",
            format!("identity/{}", a.name),
            AuditOutcome::Success,
            json!({
                "rule": a.rule,
                "severity": a.severity,
                "identity_id": a.identity,
                "owner": a.owner,
                "credential_id": a.credential,
                "summary": a.preview,
                "evidence": a.evidence,
            }),
        )?;
        opened += 1;
    }
    Ok(opened)
}

impl Registry {
    /// Saves the baselines that changed since the last save, as `node`'s. Returns how many.
    pub async fn save_anomaly_baselines(&self, node: &str) -> Result<usize, CoreError> {
        let rows = self.anomaly.take_dirty();
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let node = node.to_owned();
        self.write(move |tx, _job| {
            tx.put_anomaly_baselines(&node, &rows)?;
            Ok(n)
        })
        .await
    }

    /// Restores the baselines `node` saved. A malformed one is skipped (its identity starts
    /// learning again). Returns how many were restored.
    pub fn load_anomaly_baselines(&self, node: &str) -> Result<usize, CoreError> {
        let rows = self.reader()?.anomaly_baselines(node)?;
        let Ok(mut st) = self.anomaly.state.lock() else {
            return Ok(0);
        };
        let mut n = 0;
        for (id, saved) in rows {
            match st.baselines.restore(id, &saved) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(identity = %id, error = %e, "anomaly baseline skipped"),
            }
        }
        Ok(n)
    }

    /// Identities with an anomaly baseline on this node.
    pub fn anomaly_baselines(&self) -> usize {
        self.anomaly.baselines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_labels_parse_or_are_ignored() {
        assert_eq!(parse_window("08-18"), Some((8, 18)));
        assert_eq!(parse_window("22-6"), Some((22, 6)));
        assert_eq!(parse_window("0-24"), None, "all day is no window");
        assert_eq!(parse_window("9-9"), None);
        assert_eq!(parse_window("25-3"), None);
        assert_eq!(parse_window("nine to five"), None);
    }
}
