//! Governance: background jobs and their durable state, hygiene runs.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A background job's durable state: when it last ran and how that ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobState {
    /// The job's name (`hygiene`, …).
    pub job: String,
    /// Runs started since the store was created.
    pub runs: u64,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_finished_at: Option<OffsetDateTime>,
    /// `ok` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// The last run's summary (for hygiene: a [`HygieneReport`]) or its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_summary: Option<serde_json::Value>,
    /// What started the last run: `schedule`, or the operator who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<String>,
}

/// One hygiene check's counts in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCount {
    /// The rule id (`NHI-STALE`, …).
    pub rule: String,
    /// Subjects the rule found this run.
    pub found: u64,
    /// Of those, findings opened this run (the rest were already known).
    pub opened: u64,
}

/// What a hygiene run found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HygieneReport {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_ms: u64,
    /// Identities and credentials looked at.
    pub identities: u64,
    pub credentials: u64,
    /// Per rule, in rule order.
    pub rules: Vec<RuleCount>,
    /// Findings of earlier runs no longer found: resolved by this run.
    pub resolved: u64,
    /// Identities suspended because they stayed stale past the grace period.
    pub suspended: Vec<String>,
}

/// One check of a posture risk: what it measures and how many NHIs it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureCheck {
    /// A hygiene rule id, or a posture check id (`POSTURE-…`).
    pub id: String,
    pub description: String,
    pub count: u64,
}

/// An NHI a posture risk affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureAffected {
    /// `environment/name`.
    pub identity: String,
    pub owner: String,
    /// The checks that found it.
    pub checks: Vec<String>,
}

/// One of the OWASP Non-Human Identities Top 10 (2025) risks, measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureRisk {
    /// `NHI1` … `NHI10`.
    pub id: String,
    pub title: String,
    pub checks: Vec<PostureCheck>,
    /// Distinct NHIs affected.
    pub affected_count: u64,
    /// The NHIs affected (at most 100, by name).
    pub affected: Vec<PostureAffected>,
    /// NHIs the risk is measured over.
    pub population: u64,
    /// 100 × (1 − affected / population): 100 is clean.
    pub score: u32,
    /// `low`, `medium`, `high` or `critical`.
    pub level: String,
}

/// A bar of a chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartBar {
    pub label: String,
    pub value: u64,
}

/// The OWASP NHI Top 10 posture of the estate or one team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureReport {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// The team reported on; `None`: the whole estate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Identities not retired.
    pub identities: u64,
    /// Usable credentials.
    pub credentials: u64,
    /// Open or acknowledged findings.
    pub open_findings: u64,
    /// Mean of the risks' scores.
    pub score: u32,
    pub risks: Vec<PostureRisk>,
    /// Usable credentials by age.
    pub credential_age: Vec<ChartBar>,
    /// Open findings per owning team (the 15 teams with most).
    pub risk_by_team: Vec<ChartBar>,
    /// Findings open on each of the last 30 days (oldest first; a resolved finding counts until
    /// the last run that still saw it).
    pub findings_over_time: Vec<ChartBar>,
    /// When the hygiene checks last finished (`None`: never — hygiene counts are then empty).
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub hygiene_run_at: Option<OffsetDateTime>,
}

/// An access-review campaign: each owning team attests each of its NHIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewCampaign {
    pub id: uuid::Uuid,
    pub name: String,
    /// Only this team's NHIs (`None`: every team's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Unattested items escalate after this.
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
    /// `open` or `closed`.
    pub status: String,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub closed_at: Option<OffsetDateTime>,
    pub summary: ReviewSummary,
}

/// A campaign's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewSummary {
    pub items: u64,
    pub keep: u64,
    pub reduce: u64,
    pub retire: u64,
    pub unattested: u64,
    pub escalated: u64,
}

/// One NHI to attest in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewItem {
    pub campaign_id: uuid::Uuid,
    pub identity_id: uuid::Uuid,
    /// `environment/name`.
    pub identity: String,
    pub team: String,
    pub team_id: uuid::Uuid,
    /// The identity's scopes when the campaign started.
    pub scopes: Vec<String>,
    /// `keep`, `reduce` or `retire`, once attested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_by: Option<String>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub attested_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub escalated_at: Option<OffsetDateTime>,
}

/// `POST /v1/reviews`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReviewRequest {
    pub name: String,
    /// Days the teams have to attest (1–90).
    pub due_in_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// `POST /v1/reviews/{id}/attest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The identity (`environment/name` or id).
    pub identity: String,
    /// `keep`, `reduce` or `retire` (retiring it now).
    pub decision: String,
    pub reason: String,
    /// With `reduce`: scopes to take away now (each must be held; at least one must stay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_scopes: Vec<String>,
}

/// An audit sink's delivery state (`GET /v1/audit/sinks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SinkStatus {
    pub name: String,
    /// `file`, `syslog` or `webhook`.
    pub kind: String,
    /// Where it delivers (a path, `host:port`, or a URL without credentials).
    pub target: String,
    /// The last audit sequence number delivered (durable).
    pub cursor: u64,
    /// Events in the log after the cursor (not all of them may match the sink's filter).
    pub lag: u64,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_delivery_at: Option<OffsetDateTime>,
    /// Failed attempts since the last success.
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether this node delivers (the jobs-lease holder does).
    pub active: bool,
}
