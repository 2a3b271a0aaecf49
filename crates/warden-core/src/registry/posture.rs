//! The OWASP Non-Human Identities Top 10 (2025) posture report: for each risk, the checks that
//! measure it (hygiene findings, scanner findings, and facts read from the inventory), how many
//! NHIs each found, the NHIs affected with their owners, and a score.
//!
//! | risk | measured by |
//! |---|---|
//! | NHI1 Improper Offboarding | `NHI-STALE`, `NHI-ORPHAN`; suspended identities still holding usable credentials |
//! | NHI2 Secret Leakage | open scanner findings (leaked Warden credentials, unmanaged secrets); signs of a credential used by someone else: `NHI-ANOMALY-NETWORK`, `NHI-ANOMALY-VOLUME`, `NHI-ANOMALY-SCOPE`, `NHI-ANOMALY-AUDIENCE` |
//! | NHI3 Vulnerable Third-Party NHI | integrations and OAuth clients with privileged scopes or no expiry |
//! | NHI4 Insecure Authentication | NHIs holding static secrets; prod NHIs whose tokens need not be sender-constrained |
//! | NHI5 Overprivileged NHI | privileged scopes; `NHI-UNUSED-SCOPE` |
//! | NHI6 Insecure Cloud Deployment Configurations | CI/CD pipelines holding static secrets instead of federating |
//! | NHI7 Long-Lived Secrets | `NHI-LONG-LIVED`, `NHI-NO-EXPIRY` |
//! | NHI8 Environment Isolation | `NHI-ENV-MIX` |
//! | NHI9 NHI Reuse | `NHI-REUSE` |
//! | NHI10 Human Use of NHI | `NHI-INTERACTIVE` (browser or API-tool clients, human networks), `NHI-ANOMALY-WINDOW` |

use std::collections::{BTreeMap, BTreeSet, HashMap};

use time::Duration;
use uuid::Uuid;
use warden_types::{
    ChartBar, Credential, CredentialKind, Finding, FindingKind, FindingStatus, Identity,
    IdentityKind, IdentityStatus, PostureAffected, PostureCheck, PostureReport, PostureRisk,
};

use super::Registry;
use super::hygiene::{HYGIENE_JOB, every_credential, every_finding, every_identity};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::ports::FindingFilter;

/// Affected NHIs listed per risk (all are counted).
const LISTED: usize = 100;

/// A risk being measured: per check, the identities it found.
struct Risk {
    id: &'static str,
    title: &'static str,
    checks: Vec<(&'static str, &'static str, BTreeSet<Uuid>)>,
    population: u64,
}

fn level(score: u32) -> &'static str {
    match score {
        90.. => "low",
        70..=89 => "medium",
        40..=69 => "high",
        _ => "critical",
    }
}

impl Registry {
    /// The posture report of the estate (admins and auditors) or of one team (its members too).
    pub fn posture_report(
        &self,
        actor: &Actor,
        team: Option<&str>,
    ) -> Result<PostureReport, CoreError> {
        let store = self.snapshot()?;
        let team_id = match team {
            Some(t) => Some(
                store
                    .team_named(t)?
                    .ok_or_else(|| CoreError::NotFound(format!("team {t:?}")))?
                    .id,
            ),
            None => None,
        };
        let allowed = actor.can_read_audit() || team_id.is_some_and(|t| actor.can_manage_team(t));
        if !allowed {
            return Err(CoreError::Forbidden(
                "the estate's posture is for admins and auditors; members may ask for their team's"
                    .into(),
            ));
        }
        let now = self.now();
        let identities: HashMap<Uuid, Identity> = every_identity(&*store)?
            .into_iter()
            .filter(|i| i.status != IdentityStatus::Retired)
            .filter(|i| team_id.is_none_or(|t| i.owner_id == t))
            .map(|i| (i.id, i))
            .collect();
        let credentials: Vec<Credential> = every_credential(&*store)?
            .into_iter()
            .filter(|c| {
                c.revoked_at.is_none()
                    && c.expires_at > now
                    && identities.contains_key(&c.identity_id)
            })
            .collect();
        let findings: Vec<Finding> = every_finding(&*store, &FindingFilter::default())?
            .into_iter()
            .filter(|f| team.is_none_or(|t| f.owner.as_deref() == Some(t)))
            .collect();
        let hygiene_run_at = store
            .job_state(HYGIENE_JOB)?
            .and_then(|s| s.last_finished_at);
        drop(store);

        let open =
            |f: &&Finding| matches!(f.status, FindingStatus::Open | FindingStatus::Acknowledged);
        // Identities per open hygiene rule, and per open scanner finding.
        let mut by_rule: HashMap<&str, BTreeSet<Uuid>> = HashMap::new();
        let mut leaked: BTreeSet<Uuid> = BTreeSet::new();
        let mut unmanaged = 0u64;
        for f in findings.iter().filter(open) {
            match f.kind {
                FindingKind::Hygiene | FindingKind::Anomaly => {
                    if let Some(id) = f.identity_id {
                        by_rule.entry(f.rule.as_str()).or_default().insert(id);
                    }
                }
                FindingKind::WardenCredential => {
                    if let Some(id) = f.identity_id {
                        leaked.insert(id);
                    }
                }
                FindingKind::Unmanaged => unmanaged += 1,
                FindingKind::RotationFailed => {}
            }
        }
        let rule = |r: &str| by_rule.get(r).cloned().unwrap_or_default();
        let mut statics: BTreeSet<Uuid> = BTreeSet::new();
        for c in &credentials {
            if matches!(
                c.kind,
                CredentialKind::ApiKey | CredentialKind::ClientSecret
            ) {
                statics.insert(c.identity_id);
            }
        }
        let holding: BTreeSet<Uuid> = credentials.iter().map(|c| c.identity_id).collect();
        let select = |p: &dyn Fn(&Identity) -> bool| -> BTreeSet<Uuid> {
            identities.values().filter(|i| p(i)).map(|i| i.id).collect()
        };
        let third_party = |i: &Identity| {
            matches!(
                i.kind,
                IdentityKind::Integration | IdentityKind::OauthClient
            )
        };
        let population = u64::try_from(identities.len()).unwrap_or(u64::MAX);
        let count = |p: &dyn Fn(&Identity) -> bool| {
            u64::try_from(identities.values().filter(|i| p(i)).count()).unwrap_or(0)
        };
        let risks = vec![
            Risk {
                id: "NHI1",
                title: "Improper Offboarding",
                checks: vec![
                    (
                        "NHI-STALE",
                        "active NHIs unused past the stale threshold",
                        rule("NHI-STALE"),
                    ),
                    (
                        "NHI-ORPHAN",
                        "NHIs whose owning team has no active member",
                        rule("NHI-ORPHAN"),
                    ),
                    (
                        "REVIEW-OVERDUE",
                        "NHIs not attested in an access review by its due date",
                        rule("REVIEW-OVERDUE"),
                    ),
                    (
                        "POSTURE-SUSPENDED-CREDENTIALS",
                        "suspended NHIs still holding usable credentials",
                        select(&|i| {
                            i.status == IdentityStatus::Suspended && holding.contains(&i.id)
                        }),
                    ),
                ],
                population,
            },
            Risk {
                id: "NHI2",
                title: "Secret Leakage",
                checks: vec![
                    (
                        "POSTURE-LEAKED",
                        "NHIs with a leaked Warden credential found by the scanner and not yet resolved",
                        leaked,
                    ),
                    (
                        "NHI-ANOMALY-NETWORK",
                        "NHIs used from a network never seen for them before (a copied credential?)",
                        rule("NHI-ANOMALY-NETWORK"),
                    ),
                    (
                        "NHI-ANOMALY-VOLUME",
                        "NHIs whose hourly volume spiked far above their own baseline",
                        rule("NHI-ANOMALY-VOLUME"),
                    ),
                    (
                        "NHI-ANOMALY-SCOPE",
                        "NHIs that suddenly used a scope they had never used",
                        rule("NHI-ANOMALY-SCOPE"),
                    ),
                    (
                        "NHI-ANOMALY-AUDIENCE",
                        "NHIs that suddenly asked for a resource they had never addressed",
                        rule("NHI-ANOMALY-AUDIENCE"),
                    ),
                ],
                population,
            },
            Risk {
                id: "NHI3",
                title: "Vulnerable Third-Party NHI",
                checks: vec![
                    (
                        "POSTURE-THIRD-PARTY-PRIVILEGED",
                        "integrations and OAuth clients holding privileged scopes",
                        select(&|i| third_party(i) && i.privileged),
                    ),
                    (
                        "POSTURE-THIRD-PARTY-NO-EXPIRY",
                        "integrations and OAuth clients without an expiry date",
                        select(&|i| third_party(i) && i.expires_at.is_none()),
                    ),
                ],
                population: count(&third_party),
            },
            Risk {
                id: "NHI4",
                title: "Insecure Authentication",
                checks: vec![
                    (
                        "POSTURE-STATIC-SECRET",
                        "NHIs authenticating with static secrets (API keys, client secrets)",
                        statics.clone(),
                    ),
                    (
                        "POSTURE-PROD-BEARER",
                        "prod NHIs whose tokens need not be sender-constrained (DPoP or mTLS)",
                        select(&|i| {
                            i.environment == "prod"
                                && i.constraints.require_sender_constraint == Some(false)
                        }),
                    ),
                ],
                population,
            },
            Risk {
                id: "NHI5",
                title: "Overprivileged NHI",
                checks: vec![
                    (
                        "POSTURE-PRIVILEGED",
                        "NHIs holding privileged scopes (wildcards, admin)",
                        select(&|i| i.privileged),
                    ),
                    (
                        "NHI-UNUSED-SCOPE",
                        "NHIs holding scopes they have not used",
                        rule("NHI-UNUSED-SCOPE"),
                    ),
                ],
                population,
            },
            Risk {
                id: "NHI6",
                title: "Insecure Cloud Deployment Configurations",
                checks: vec![(
                    "POSTURE-CI-STATIC-SECRET",
                    "CI/CD pipelines holding static secrets instead of federating with their platform's OIDC tokens",
                    select(&|i| i.kind == IdentityKind::CiPipeline && statics.contains(&i.id)),
                )],
                population: count(&|i| i.kind == IdentityKind::CiPipeline),
            },
            Risk {
                id: "NHI7",
                title: "Long-Lived Secrets",
                checks: vec![
                    (
                        "NHI-LONG-LIVED",
                        "NHIs with long-lived secrets",
                        rule("NHI-LONG-LIVED"),
                    ),
                    (
                        "NHI-NO-EXPIRY",
                        "NHIs with credentials that effectively never expire",
                        rule("NHI-NO-EXPIRY"),
                    ),
                ],
                population,
            },
            Risk {
                id: "NHI8",
                title: "Environment Isolation",
                checks: vec![(
                    "NHI-ENV-MIX",
                    "NHIs whose credentials are used from another environment's networks",
                    rule("NHI-ENV-MIX"),
                )],
                population,
            },
            Risk {
                id: "NHI9",
                title: "NHI Reuse",
                checks: vec![(
                    "NHI-REUSE",
                    "NHIs whose credential is used from many networks (shared by several workloads)",
                    rule("NHI-REUSE"),
                )],
                population,
            },
            Risk {
                id: "NHI10",
                title: "Human Use of NHI",
                checks: vec![
                    (
                        "NHI-INTERACTIVE",
                        "NHIs whose tokens were requested by a browser or API tool, or from a human network",
                        rule("NHI-INTERACTIVE"),
                    ),
                    (
                        "NHI-ANOMALY-WINDOW",
                        "schedule-bound NHIs used outside their working window",
                        rule("NHI-ANOMALY-WINDOW"),
                    ),
                ],
                population,
            },
        ];
        let mut out = Vec::new();
        for r in risks {
            let mut affected: BTreeMap<(String, Uuid), Vec<String>> = BTreeMap::new();
            for (id, _, ids) in &r.checks {
                for i in ids.iter().filter_map(|u| identities.get(u)) {
                    affected
                        .entry((format!("{}/{}", i.environment, i.name), i.id))
                        .or_default()
                        .push((*id).to_owned());
                }
            }
            let affected_count = u64::try_from(affected.len()).unwrap_or(u64::MAX);
            let score = if r.population == 0 {
                100
            } else {
                let clean = r
                    .population
                    .saturating_sub(affected_count.min(r.population));
                u32::try_from(clean * 100 / r.population).unwrap_or(0)
            };
            let mut checks: Vec<PostureCheck> = r
                .checks
                .iter()
                .map(|(id, d, ids)| PostureCheck {
                    id: (*id).to_owned(),
                    description: (*d).to_owned(),
                    count: u64::try_from(ids.len()).unwrap_or(0),
                })
                .collect();
            if r.id == "NHI2" {
                checks.push(PostureCheck {
                    id: "POSTURE-UNMANAGED".into(),
                    description: "unmanaged secrets found by the scanner and not yet resolved (not tied to an NHI)".into(),
                    count: unmanaged,
                });
            }
            out.push(PostureRisk {
                id: r.id.into(),
                title: r.title.into(),
                checks,
                affected_count,
                affected: affected
                    .into_iter()
                    .take(LISTED)
                    .map(|((name, id), checks)| PostureAffected {
                        identity: name,
                        owner: identities
                            .get(&id)
                            .map(|i| i.owner.clone())
                            .unwrap_or_default(),
                        checks,
                    })
                    .collect(),
                population: r.population,
                score,
                level: level(score).into(),
            });
        }
        let score = u32::try_from(
            out.iter().map(|r| u64::from(r.score)).sum::<u64>() / (out.len().max(1) as u64),
        )
        .unwrap_or(0);

        // Charts.
        let buckets: [(&str, i64); 6] = [
            ("< 7 days", 7),
            ("7–30 days", 30),
            ("30–90 days", 90),
            ("90–180 days", 180),
            ("180–365 days", 365),
            ("> 1 year", i64::MAX),
        ];
        let mut ages = vec![0u64; buckets.len()];
        for c in &credentials {
            let d = (now - c.created_at).whole_days();
            let slot = buckets
                .iter()
                .position(|(_, max)| d < *max)
                .unwrap_or(buckets.len() - 1);
            ages[slot] += 1;
        }
        let credential_age = buckets
            .iter()
            .zip(ages)
            .map(|((l, _), v)| ChartBar {
                label: (*l).to_owned(),
                value: v,
            })
            .collect();
        let mut per_team: HashMap<String, u64> = HashMap::new();
        for f in findings.iter().filter(open) {
            if let Some(o) = &f.owner {
                *per_team.entry(o.clone()).or_default() += 1;
            }
        }
        let mut per_team: Vec<(String, u64)> = per_team.into_iter().collect();
        per_team.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let risk_by_team = per_team
            .into_iter()
            .take(15)
            .map(|(label, value)| ChartBar { label, value })
            .collect();
        let today = now.date();
        let findings_over_time = (0..30)
            .rev()
            .map(|back| {
                let day = today - Duration::days(back);
                let end = day.next_day().unwrap_or(day).midnight().assume_utc();
                let open_then = findings
                    .iter()
                    .filter(|f| f.first_seen < end)
                    .filter(|f| {
                        matches!(f.status, FindingStatus::Open | FindingStatus::Acknowledged)
                            || f.last_seen >= day.midnight().assume_utc()
                    })
                    .count();
                ChartBar {
                    label: day.to_string(),
                    value: u64::try_from(open_then).unwrap_or(0),
                }
            })
            .collect();
        let open_findings = u64::try_from(findings.iter().filter(open).count()).unwrap_or(0);
        Ok(PostureReport {
            generated_at: now,
            team: team.map(str::to_owned),
            identities: population,
            credentials: u64::try_from(credentials.len()).unwrap_or(0),
            open_findings,
            score,
            risks: out,
            credential_age,
            risk_by_team,
            findings_over_time,
            hygiene_run_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn levels_follow_the_score() {
        assert_eq!(level(100), "low");
        assert_eq!(level(90), "low");
        assert_eq!(level(89), "medium");
        assert_eq!(level(40), "high");
        assert_eq!(level(39), "critical");
        assert_eq!(level(0), "critical");
    }
}
