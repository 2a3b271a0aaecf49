//! Federation: external OIDC issuers Warden trusts (CI systems, Kubernetes, clouds) and the trust
//! rules that map their tokens' claims to an NHI.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// An OIDC issuer whose tokens Warden accepts in exchange for its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrustedIssuer {
    pub id: Uuid,
    /// A short name (`github`, `gitlab`, `k8s-prod`).
    pub name: String,
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// Where its keys are fetched (and refetched on an unknown `kid`); absent with `static_jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Keys given once, for issuers Warden cannot reach (air-gapped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_jwks: Option<serde_json::Value>,
    /// Accepted `aud` values (one must match).
    pub audiences: Vec<String>,
    /// Tokens older than this (by `iat`) are refused.
    pub max_token_age_secs: u64,
    /// Each token (`jti`) may be exchanged once.
    #[serde(default)]
    pub single_use: bool,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `POST /v1/issuers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddIssuerRequest {
    pub name: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_jwks: Option<serde_json::Value>,
    pub audiences: Vec<String>,
    /// Default 600 (10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_age_secs: Option<u64>,
    #[serde(default)]
    pub single_use: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuerList {
    pub items: Vec<TrustedIssuer>,
}

str_enum! {
    /// Where a trust rule stands: a new or changed rule waits for an admin other than its author.
    TrustRuleStatus {
        PendingApproval => "pending_approval",
        Active => "active",
        Denied => "denied",
        Revoked => "revoked",
    }
}

/// Maps tokens of one issuer whose claims satisfy `condition` to one NHI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrustRule {
    pub id: Uuid,
    /// The NHI it grants (the rule belongs to it).
    pub identity_id: Uuid,
    pub issuer_id: Uuid,
    /// The condition as written, e.g. `repository == "org/app" && ref == "refs/heads/main"`.
    pub condition: String,
    /// Tokens issued through this rule live at most this long (default 300).
    pub max_ttl_secs: u64,
    pub status: TrustRuleStatus,
    pub created_by: String,
    /// The requesting operator (may not approve their own rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub decided_at: Option<OffsetDateTime>,
}

/// `POST /v1/trust-rules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTrustRuleRequest {
    /// The NHI (id, ENV/NAME or NAME).
    pub identity: String,
    /// The issuer's name.
    pub issuer: String,
    pub condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrustRuleList {
    pub items: Vec<TrustRule>,
}

/// `POST /v1/trust-rules/{id}/approve|deny`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideTrustRuleRequest {
    pub reason: String,
}

/// Who lends their authority in a delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Delegator {
    /// A Warden identity (an agent delegating on to a sub-agent, or a service).
    Identity(Uuid),
    /// A person (or service) known to a trusted issuer: their tokens' `sub` there.
    External { issuer: String, subject: String },
}

/// A narrow, short, revocable loan of authority to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delegation {
    pub id: Uuid,
    pub delegator: Delegator,
    /// The agent identity that may act.
    pub agent_id: Uuid,
    /// What it may do (a subset of the delegator's scopes is enforced at exchange).
    pub scopes: Vec<String>,
    /// The one resource (e.g. an MCP server's URL) the delegated tokens are for.
    pub audience: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// How many agents deep a chain through this delegation may go (1: the agent only).
    pub max_depth: u32,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `POST /v1/delegations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDelegationRequest {
    /// A Warden identity (id, ENV/NAME or NAME) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegator_identity: Option<String>,
    /// … or a subject of a trusted issuer (its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegator_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegator_subject: Option<String>,
    /// The agent (id, ENV/NAME or NAME).
    pub agent: String,
    pub scopes: Vec<String>,
    pub audience: String,
    /// Lifetime in seconds (at most a day).
    pub ttl_secs: u64,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DelegationList {
    pub items: Vec<Delegation>,
}

/// One tool an MCP server offers and the scopes a caller needs for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub scopes: Vec<String>,
}

/// An MCP server's catalogue: its resource URL and tools (the identity is of kind `mcp_server`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct McpServer {
    pub identity_id: Uuid,
    /// The protected resource identifier clients use as `resource` / `aud` (RFC 8707, 9728).
    pub resource: String,
    pub tools: Vec<McpTool>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `PUT /v1/mcp-servers/{identity}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMcpServerRequest {
    pub resource: String,
    pub tools: Vec<McpTool>,
}

/// A Cedar policy document as stored (versioned: every change bumps `version`; the audit log
/// keeps every text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredPolicy {
    pub name: String,
    pub version: u32,
    pub text: String,
    pub updated_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    pub items: Vec<StoredPolicy>,
}

/// `PUT /v1/policies/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicyRequest {
    pub text: String,
}

/// `POST /v1/authorize`: may the bearer of `token` (an agent, possibly acting for someone) do
/// `action` on `resource`?
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    pub token: String,
    /// A Warden scope, e.g. `tickets:comment`.
    pub action: String,
    pub resource: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthorizeResponse {
    /// `allow` or `deny`.
    pub decision: String,
    /// The policies that decided.
    pub policies: Vec<String>,
    /// Why, in words (the token's scope, the chain, the policies).
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What a resource server that verifies delegated tokens locally must stop honouring: revoked
/// delegations (drop tokens whose `del` names one) and identities no longer active (drop tokens
/// whose `client_id` or `act` chain names one). `GET /v1/revocations?since=`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationFeed {
    /// Ask again with `since` = this.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub delegations: Vec<RevokedDelegation>,
    pub identities: Vec<InactiveIdentity>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevokedDelegation {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InactiveIdentity {
    pub id: Uuid,
    pub status: crate::IdentityStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}
