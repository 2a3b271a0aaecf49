//! Records: what the API returns and what the store keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {:?}; expected one of: {}",
                        stringify!($name),
                        other,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

str_enum! {
    /// What kind of non-human identity this is.
    IdentityKind {
        ServiceAccount => "service_account",
        Workload => "workload",
        CiPipeline => "ci_pipeline",
        AiAgent => "ai_agent",
        McpServer => "mcp_server",
        OauthClient => "oauth_client",
        Integration => "integration",
        Device => "device",
        Bot => "bot",
        Rpa => "rpa",
    }
}

str_enum! {
    /// Lifecycle: `pending_approval → active ⇄ suspended → retired` (terminal).
    IdentityStatus {
        PendingApproval => "pending_approval",
        Active => "active",
        Suspended => "suspended",
        Retired => "retired",
    }
}

str_enum! {
    /// Kinds of credential an identity can hold.
    CredentialKind {
        ApiKey => "api_key",
        ClientSecret => "client_secret",
        PublicKey => "public_key",
    }
}

str_enum! {
    /// Whether Warden manages the identity or found it elsewhere.
    Origin {
        Managed => "managed",
        Discovered => "discovered",
    }
}

str_enum! {
    /// An operator's role. `member` manages only the NHIs of the teams it belongs to.
    OperatorRole {
        Admin => "admin",
        Auditor => "auditor",
        Member => "member",
    }
}

str_enum! {
    /// What a change request holds back.
    ChangeKind {
        Create => "create",
        AddScopes => "add_scopes",
    }
}

str_enum! {
    ChangeStatus {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        Cancelled => "cancelled",
    }
}

str_enum! {
    AuditOutcome {
        Success => "success",
        Failure => "failure",
        Denied => "denied",
    }
}

/// Restrictions on how an identity may authenticate. Enforced by the token service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Refuse plain bearer tokens: require DPoP or mTLS binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_sender_constraint: Option<bool>,
    /// CIDR ranges the identity may authenticate from; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Upper bound on the lifetime of tokens issued to this identity, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_ttl_seconds: Option<u64>,
    /// For `tls_client_auth` (RFC 8705 §2.1): the subject alternative name (URI, e.g. a SPIFFE
    /// ID, or DNS name) a client certificate issued by the configured client CA must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san: Option<String>,
}

/// A non-human identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub id: Uuid,
    pub name: String,
    pub kind: IdentityKind,
    /// Owning team's id.
    pub owner_id: Uuid,
    /// Owning team's name.
    pub owner: String,
    pub purpose: String,
    pub environment: String,
    pub status: IdentityStatus,
    /// Why the identity is in its current status (the last transition's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Suspended by an admin: only an admin may resume it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended_by_admin: bool,
    /// Effective scopes, `resource:action`.
    pub scopes: Vec<String>,
    /// True when any effective scope is privileged.
    pub privileged: bool,
    pub audiences: Vec<String>,
    pub constraints: Constraints,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
    pub origin: Origin,
    /// The OAuth `client_id` to use at the token endpoint (the identity id).
    pub client_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// A credential's metadata. Secret values are never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Credential {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub kind: CredentialKind,
    /// The first characters of the secret (`wdn_ak_AbCd…`) or the JWK thumbprint, to recognise it.
    pub hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// For public keys: the RFC 7638 JWK SHA-256 thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// For public keys: the registered public JWK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// The credential this one replaced by rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<Uuid>,
    /// The credential that replaced this one; it stays valid until `expires_at` (the overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<Uuid>,
    pub created_by: String,
}

/// A credential as issued: the secret appears here once and is never retrievable again.
/// `Debug` redacts it.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedCredential {
    pub credential: Credential,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Names of the operators who are members.
    pub members: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operator {
    pub id: Uuid,
    pub name: String,
    pub role: OperatorRole,
    /// Names of the teams the operator belongs to.
    pub teams: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub disabled_at: Option<OffsetDateTime>,
}

/// An operator as created: the token appears here once. `Debug` redacts it.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedOperator {
    pub operator: Operator,
    pub token: String,
}

/// A change held for four-eyes approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangeRequest {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub identity_name: String,
    pub environment: String,
    pub kind: ChangeKind,
    /// The scopes the change would add (for `create`, all requested scopes).
    pub scopes: Vec<String>,
    /// The privileged ones among them: the reason the change is held.
    pub privileged_scopes: Vec<String>,
    pub status: ChangeStatus,
    pub requested_by: String,
    /// The requesting operator's id: they may not decide their own request.
    pub requester_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
}

/// One link of the tamper-evident audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// `operator:<name>`, `identity:<id>`, `system`, or `anonymous`.
    pub actor: String,
    /// Dotted verb, e.g. `identity.create`, `credential.authenticate`.
    pub action: String,
    /// `identity:<id>`, `credential:<id>`, `team:<id>`, …
    pub target: String,
    pub outcome: AuditOutcome,
    pub request_id: String,
    pub source: String,
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous event (64 zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and the canonical encoding of this event.
    pub hash: String,
}

/// The result of walking the audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyReport {
    pub ok: bool,
    pub events_checked: u64,
    /// The last sequence number that checked out.
    pub last_good_seq: u64,
    /// The first event found edited, deleted, inserted or reordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The sequence number covered by the last signed checkpoint.
    pub checkpoint_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentityPage {
    pub items: Vec<Identity>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeRequestPage {
    pub items: Vec<ChangeRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialList {
    pub items: Vec<Credential>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamList {
    pub items: Vec<Team>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperatorList {
    pub items: Vec<Operator>,
}

/// Answer of `POST /v1/keys/verify`. Only `valid` is present when the key does not authenticate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyVerification {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<Uuid>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// Who the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WhoAmI {
    Operator {
        id: Uuid,
        name: String,
        role: OperatorRole,
        teams: Vec<String>,
    },
    Identity {
        id: Uuid,
        name: String,
        environment: String,
        owner: String,
        scopes: Vec<String>,
        /// The credential the caller authenticated with (API key); absent for an access token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_id: Option<Uuid>,
        /// The scopes of the access token the caller presented, if it presented one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_scopes: Option<Vec<String>>,
    },
}

/// The result of a create or update: the identity as it now is, and the change request that holds
/// back whatever needs approval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentityChange {
    pub identity: Identity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<ChangeRequest>,
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("credential", &self.credential)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Debug for CreatedOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedOperator")
            .field("operator", &self.operator)
            .field("token", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_issued_secrets() {
        let op = CreatedOperator {
            operator: Operator {
                id: Uuid::nil(),
                name: "x".into(),
                role: OperatorRole::Admin,
                teams: vec![],
                created_at: OffsetDateTime::UNIX_EPOCH,
                disabled_at: None,
            },
            token: "wdn_op_SECRETSECRET".into(),
        };
        assert!(!format!("{op:?}").contains("SECRETSECRET"));
        let req = crate::VerifyKeyRequest {
            key: "wdn_ak_SECRETSECRET".into(),
        };
        assert!(!format!("{req:?}").contains("SECRETSECRET"));
    }
}

str_enum! {
    /// Where a finding stands.
    FindingStatus {
        Open => "open",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
        Suppressed => "suppressed",
    }
}

str_enum! {
    /// What a finding is.
    FindingKind {
        /// A Warden credential (recognised by its checksum and found in the registry).
        WardenCredential => "warden_credential",
        /// Any other secret: a credential Warden does not manage.
        Unmanaged => "unmanaged",
        /// A vault rotation that failed its health check and was rolled back.
        RotationFailed => "rotation_failed",
        /// A hygiene check's result (`rule` names the check: `NHI-STALE`, `NHI-ORPHAN`, …).
        Hygiene => "hygiene",
        /// Unusual use seen at the token endpoint (`NHI-ANOMALY-*`, `NHI-INTERACTIVE`).
        Anomaly => "anomaly",
    }
}

/// A leaked or unmanaged secret found by `warden scan`, as the inventory keeps it. Deduplicated by
/// fingerprint: a secret reported again updates `last_seen` and `times_seen`. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    pub id: Uuid,
    pub fingerprint: String,
    pub kind: FindingKind,
    pub rule: String,
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub path: String,
    pub line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The line with the secret redacted.
    pub preview: String,
    /// Who should act: from CODEOWNERS, else the commit author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_owner: Option<String>,
    /// For a Warden credential: the identity, its owning team and the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<Uuid>,
    /// What Warden did on its own: `revoked`, `flagged`, or `already_revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub status: FindingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub reported_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub times_seen: u64,
    /// What the check saw (hygiene findings): days unused, the sources, the scopes unused, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
    /// What to do about it: `retire`, `reduce scopes to …`, `rotate`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FindingPage {
    pub items: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Answer of `POST /v1/findings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FindingsReported {
    pub created: u64,
    pub updated: u64,
    /// Warden credentials revoked because they leaked.
    pub revoked: u64,
    pub items: Vec<Finding>,
}
