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
