//! Federation handlers: trusted issuers and trust rules.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use warden_types::*;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, Body, Params, PathArg};

/// Trust an OIDC issuer (admins).
#[utoipa::path(post, path = "/v1/issuers", request_body = AddIssuerRequest,
    responses((status = 201, body = TrustedIssuer), (status = 403, body = Problem)))]
pub(crate) async fn add_issuer(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<AddIssuerRequest>,
) -> ApiResult<(StatusCode, Json<TrustedIssuer>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.add_issuer(&a, req).await?),
    ))
}

#[utoipa::path(get, path = "/v1/issuers", responses((status = 200, body = IssuerList)))]
pub(crate) async fn list_issuers(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<IssuerList>> {
    Ok(Json(IssuerList {
        items: s.registry.list_issuers(&a)?,
    }))
}

/// Stop trusting an issuer (admins; its rules must be revoked first).
#[utoipa::path(delete, path = "/v1/issuers/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = Problem)))]
pub(crate) async fn remove_issuer(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(name): PathArg<String>,
) -> ApiResult<StatusCode> {
    s.registry.remove_issuer(&a, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Write a trust rule for an NHI; an admin other than its author must approve it.
#[utoipa::path(post, path = "/v1/trust-rules", request_body = AddTrustRuleRequest,
    responses((status = 201, body = TrustRule), (status = 403, body = Problem)))]
pub(crate) async fn add_trust_rule(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<AddTrustRuleRequest>,
) -> ApiResult<(StatusCode, Json<TrustRule>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.add_trust_rule(&a, req).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleQuery {
    /// Only the rules of this identity.
    identity: Option<String>,
}

#[utoipa::path(get, path = "/v1/trust-rules", params(RuleQuery), responses((status = 200, body = TrustRuleList)))]
pub(crate) async fn list_trust_rules(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<RuleQuery>,
) -> ApiResult<Json<TrustRuleList>> {
    Ok(Json(TrustRuleList {
        items: s.registry.list_trust_rules(&a, q.identity.as_deref())?,
    }))
}

#[utoipa::path(post, path = "/v1/trust-rules/{id}/approve", request_body = DecideTrustRuleRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = TrustRule), (status = 403, body = Problem)))]
pub(crate) async fn approve_trust_rule(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<DecideTrustRuleRequest>,
) -> ApiResult<Json<TrustRule>> {
    Ok(Json(
        s.registry
            .decide_trust_rule(&a, id, true, req.reason)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/trust-rules/{id}/deny", request_body = DecideTrustRuleRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = TrustRule), (status = 403, body = Problem)))]
pub(crate) async fn deny_trust_rule(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<DecideTrustRuleRequest>,
) -> ApiResult<Json<TrustRule>> {
    Ok(Json(
        s.registry
            .decide_trust_rule(&a, id, false, req.reason)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/trust-rules/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 200, body = TrustRule), (status = 403, body = Problem)))]
pub(crate) async fn revoke_trust_rule(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<TrustRule>> {
    Ok(Json(s.registry.revoke_trust_rule(&a, id).await?))
}

/// Lend an agent some authority (RFC 8693 delegation).
#[utoipa::path(post, path = "/v1/delegations", request_body = CreateDelegationRequest,
    responses((status = 201, body = Delegation), (status = 403, body = Problem)))]
pub(crate) async fn create_delegation(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<CreateDelegationRequest>,
) -> ApiResult<(StatusCode, Json<Delegation>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.create_delegation(&a, req).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DelegationQuery {
    /// Only the delegations to this agent.
    agent: Option<String>,
}

#[utoipa::path(get, path = "/v1/delegations", params(DelegationQuery), responses((status = 200, body = DelegationList)))]
pub(crate) async fn list_delegations(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<DelegationQuery>,
) -> ApiResult<Json<DelegationList>> {
    Ok(Json(DelegationList {
        items: s.registry.list_delegations(&a, q.agent.as_deref())?,
    }))
}

/// Revoke a delegation: every token derived from it becomes inactive.
#[utoipa::path(post, path = "/v1/delegations/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 200, body = Delegation), (status = 403, body = Problem)))]
pub(crate) async fn revoke_delegation(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<Delegation>> {
    Ok(Json(s.registry.revoke_delegation(&a, id).await?))
}

/// Set an MCP server's resource URL and tool catalogue.
#[utoipa::path(put, path = "/v1/mcp-servers/{identity}", request_body = PutMcpServerRequest,
    params(("identity" = String, Path)), responses((status = 200, body = McpServer), (status = 403, body = Problem)))]
pub(crate) async fn put_mcp_server(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(identity): PathArg<String>,
    Body(req): Body<PutMcpServerRequest>,
) -> ApiResult<Json<McpServer>> {
    Ok(Json(s.registry.put_mcp_server(&a, &identity, req).await?))
}

#[utoipa::path(get, path = "/v1/mcp-servers/{identity}", params(("identity" = String, Path)),
    responses((status = 200, body = McpServer), (status = 404, body = Problem)))]
pub(crate) async fn get_mcp_server(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(identity): PathArg<String>,
) -> ApiResult<Json<McpServer>> {
    Ok(Json(s.registry.mcp_server(&a, &identity)?))
}

/// RFC 9728 OAuth Protected Resource Metadata of an MCP server (public).
pub(crate) async fn protected_resource_metadata(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let not_found = || {
        crate::error::ApiError::new(ErrorCode::NotFound, "no such MCP server".to_owned())
            .into_response()
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found();
    };
    match s.registry.protected_resource_metadata(id) {
        Ok(Some(doc)) => Json(doc).into_response(),
        Ok(None) => not_found(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

/// Create or replace a Cedar policy document (admins); refused unless it validates.
#[utoipa::path(put, path = "/v1/policies/{name}", request_body = PutPolicyRequest,
    params(("name" = String, Path)), responses((status = 200, body = StoredPolicy), (status = 400, body = Problem)))]
pub(crate) async fn put_policy(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(name): PathArg<String>,
    Body(req): Body<PutPolicyRequest>,
) -> ApiResult<Json<StoredPolicy>> {
    Ok(Json(s.registry.put_policy(&a, &name, req.text).await?))
}

#[utoipa::path(get, path = "/v1/policies", responses((status = 200, body = PolicyList)))]
pub(crate) async fn list_policies(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<PolicyList>> {
    Ok(Json(PolicyList {
        items: s.registry.list_policies(&a)?,
    }))
}

#[utoipa::path(delete, path = "/v1/policies/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_policy(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(name): PathArg<String>,
) -> ApiResult<StatusCode> {
    s.registry.delete_policy(&a, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The decision point: may the bearer of this token do this action on this resource?
#[utoipa::path(post, path = "/v1/authorize", request_body = AuthorizeRequest,
    responses((status = 200, body = AuthorizeResponse)))]
pub(crate) async fn authorize(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<AuthorizeRequest>,
) -> ApiResult<Json<AuthorizeResponse>> {
    Ok(Json(s.registry.authorize(&a, req).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedQuery {
    /// RFC 3339; default: everything.
    since: Option<String>,
}

/// The revocation feed for resource servers that verify delegated tokens locally.
#[utoipa::path(get, path = "/v1/revocations", params(FeedQuery), responses((status = 200, body = RevocationFeed)))]
pub(crate) async fn revocations(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<FeedQuery>,
) -> ApiResult<Json<RevocationFeed>> {
    let since = match q.since.as_deref() {
        None => time::OffsetDateTime::UNIX_EPOCH,
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
            crate::error::ApiError::from(warden_core::CoreError::field(
                "since",
                "an RFC 3339 time like 2026-01-31T00:00:00Z",
            ))
        })?,
    };
    Ok(Json(s.registry.revocations(&a, since)?))
}
