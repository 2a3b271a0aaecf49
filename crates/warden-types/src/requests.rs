//! Requests the API accepts. Every one rejects unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Constraints, CredentialKind, IdentityKind, OperatorRole};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityRequest {
    /// DNS-label style: lowercase letters, digits and `-`, 1–63 chars, unique per environment.
    #[serde(default)]
    pub name: String,
    pub kind: IdentityKind,
    /// Owning team, by name or id. Required (missing is reported as an invalid `owner`).
    #[serde(default)]
    pub owner: String,
    /// One line, 10–200 characters: what this identity is for. Required.
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub constraints: Option<Constraints>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    #[serde(default, with = "crate::rfc3339_opt")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A partial update. Scope removals apply at once; additions that include a privileged scope are
/// held for approval as one change request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentityRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
}

/// Suspend, resume or retire.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Why; recorded on the identity and in the audit event. Required for retire and suspend.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCredentialRequest {
    pub kind: CredentialKind,
    /// Lifetime in seconds; defaults to, and may not exceed, the kind's configured maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// For `public_key`: the public JWK (OKP Ed25519, EC P-256/P-384, or RSA ≥ 2048 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCredentialRequest {
    /// How long the old credential stays valid after the new one is issued, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_seconds: Option<u64>,
    /// Lifetime of the new credential; defaults to the kind's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeCredentialRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamMemberRequest {
    /// Operator name or id.
    pub operator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorRequest {
    pub name: String,
    pub role: OperatorRole,
    /// Teams (names or ids) the operator joins.
    #[serde(default)]
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Why the approver decided so; required.
    pub reason: String,
}

/// `Debug` redacts the key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyRequest {
    pub key: String,
}

impl std::fmt::Debug for VerifyKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKeyRequest { key: [redacted] }")
    }
}

/// One finding as `warden scan --report-to` sends it.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindingReport {
    pub fingerprint: String,
    pub rule: String,
    pub severity: String,
    #[serde(default)]
    pub repository: Option<String>,
    pub path: String,
    pub line: u64,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub preview: String,
    #[serde(default)]
    pub suggested_owner: Option<String>,
    /// Only for Warden's own secrets (rules `warden-*`): the server recognises the credential by
    /// its keyed hash, as it authenticates it. Never sent for other secrets.
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for FindingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FindingReport")
            .field("fingerprint", &self.fingerprint)
            .field("rule", &self.rule)
            .field("path", &self.path)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// `POST /v1/findings`: at most 1,000 findings per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportFindingsRequest {
    pub findings: Vec<FindingReport>,
}

/// `PATCH /v1/findings/{id}`: acknowledge, resolve or suppress (with a reason).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFindingRequest {
    pub status: crate::FindingStatus,
    #[serde(default)]
    pub reason: Option<String>,
}
