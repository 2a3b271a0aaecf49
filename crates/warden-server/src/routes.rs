//! Handlers. Each is thin: authenticate (the `Caller` extractor), parse, call the registry, map.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;
use uuid::Uuid;
use warden_core::lifecycle::Transition;
use warden_core::ports::{AuditFilter, IdentityFilter};
use warden_types::*;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Body, Params, PathArg};

fn bad_query(field: &str, reason: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::InvalidField,
        format!("{field}: {}", reason.into()),
    );
    e.0.field = Some(field.to_owned());
    e
}

fn parse_time(field: &str, v: &Option<String>) -> ApiResult<Option<OffsetDateTime>> {
    v.as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
                bad_query(field, "expected an RFC 3339 time like 2026-01-31T00:00:00Z")
            })
        })
        .transpose()
}

fn parse_cursor(v: &Option<String>) -> ApiResult<Option<Uuid>> {
    v.as_deref()
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| bad_query("cursor", "not a cursor returned by this API"))
        })
        .transpose()
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.registry.store().ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::from(warden_core::CoreError::Store(e)).into_response(),
    }
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {}", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("method not allowed on {}", uri.path()),
    )
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI), (status = 401, body = Problem)))]
pub(crate) async fn whoami(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<WhoAmI>> {
    Ok(Json(s.registry.whoami(&a)?))
}

/// Verify an NHI API key (for resource servers). Every attempt is audited.
#[utoipa::path(post, path = "/v1/keys/verify", request_body = VerifyKeyRequest,
    responses((status = 200, body = KeyVerification), (status = 401, body = Problem)))]
pub(crate) async fn verify_key(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<VerifyKeyRequest>,
) -> ApiResult<Json<KeyVerification>> {
    Ok(Json(s.registry.verify_key(&a, &req.key).await?))
}

#[utoipa::path(get, path = "/v1/teams", responses((status = 200, body = TeamList)))]
pub(crate) async fn list_teams(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<TeamList>> {
    Ok(Json(TeamList {
        items: s.registry.list_teams(&a)?,
    }))
}

#[utoipa::path(post, path = "/v1/teams", request_body = CreateTeamRequest,
    responses((status = 201, body = Team), (status = 409, body = Problem)))]
pub(crate) async fn create_team(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<CreateTeamRequest>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.create_team(&a, req).await?),
    ))
}

#[utoipa::path(get, path = "/v1/teams/{team}", params(("team" = String, Path, description = "team name or id")),
    responses((status = 200, body = Team), (status = 404, body = Problem)))]
pub(crate) async fn get_team(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(team): PathArg<String>,
) -> ApiResult<Json<Team>> {
    Ok(Json(s.registry.team(&a, &team)?))
}

#[utoipa::path(post, path = "/v1/teams/{team}/members", request_body = TeamMemberRequest,
    params(("team" = String, Path, description = "team name or id")), responses((status = 200, body = Team)))]
pub(crate) async fn add_member(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(team): PathArg<String>,
    Body(req): Body<TeamMemberRequest>,
) -> ApiResult<Json<Team>> {
    Ok(Json(
        s.registry
            .set_membership(&a, &team, &req.operator, true)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/teams/{team}/members/{operator}",
    params(("team" = String, Path), ("operator" = String, Path)), responses((status = 200, body = Team)))]
pub(crate) async fn remove_member(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg((team, operator)): PathArg<(String, String)>,
) -> ApiResult<Json<Team>> {
    Ok(Json(
        s.registry
            .set_membership(&a, &team, &operator, false)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/operators", responses((status = 200, body = OperatorList)))]
pub(crate) async fn list_operators(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<OperatorList>> {
    Ok(Json(OperatorList {
        items: s.registry.list_operators(&a)?,
    }))
}

/// Create an operator; the token is in the response once.
#[utoipa::path(post, path = "/v1/operators", request_body = CreateOperatorRequest,
    responses((status = 201, body = CreatedOperator), (status = 403, body = Problem)))]
pub(crate) async fn create_operator(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<CreateOperatorRequest>,
) -> ApiResult<(StatusCode, Json<CreatedOperator>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.create_operator(&a, req).await?),
    ))
}

/// Disable an operator: its token stops working at once (admin).
#[utoipa::path(post, path = "/v1/operators/{operator}/disable", request_body = TransitionRequest,
    params(("operator" = String, Path, description = "operator name or id")),
    responses((status = 200, body = Operator), (status = 403, body = Problem)))]
pub(crate) async fn disable_operator(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(op): PathArg<String>,
    Body(req): Body<TransitionRequest>,
) -> ApiResult<Json<Operator>> {
    Ok(Json(
        s.registry
            .set_operator_disabled(&a, &op, true, req.reason)
            .await?,
    ))
}

/// Re-enable a disabled operator (admin).
#[utoipa::path(post, path = "/v1/operators/{operator}/enable", request_body = TransitionRequest,
    params(("operator" = String, Path)), responses((status = 200, body = Operator)))]
pub(crate) async fn enable_operator(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(op): PathArg<String>,
    Body(req): Body<TransitionRequest>,
) -> ApiResult<Json<Operator>> {
    Ok(Json(
        s.registry
            .set_operator_disabled(&a, &op, false, req.reason)
            .await?,
    ))
}

/// Replace an operator's token; the new one is in the response once.
#[utoipa::path(post, path = "/v1/operators/{operator}/rotate-token",
    params(("operator" = String, Path)), responses((status = 200, body = CreatedOperator)))]
pub(crate) async fn rotate_operator_token(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(op): PathArg<String>,
) -> ApiResult<Json<CreatedOperator>> {
    Ok(Json(s.registry.rotate_operator_token(&a, &op).await?))
}

/// Filters for listing identities.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityQuery {
    /// Owning team, by name or id.
    owner: Option<String>,
    kind: Option<IdentityKind>,
    status: Option<IdentityStatus>,
    environment: Option<String>,
    name: Option<String>,
    /// `key=value`
    label: Option<String>,
    privileged: Option<bool>,
    /// RFC 3339 time
    expiring_before: Option<String>,
    cursor: Option<String>,
    /// Page size, 1–1000 (default 100).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/identities", params(IdentityQuery),
    responses((status = 200, body = IdentityPage), (status = 400, body = Problem)))]
pub(crate) async fn list_identities(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<IdentityQuery>,
) -> ApiResult<Json<IdentityPage>> {
    let owner = match &q.owner {
        None => None,
        Some(o) => Some(s.registry.team(&a, o)?.id),
    };
    let label = match &q.label {
        None => None,
        Some(l) => {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| bad_query("label", "expected key=value"))?;
            Some((k.to_owned(), v.to_owned()))
        }
    };
    let filter = IdentityFilter {
        owner_in: None,
        owner,
        kind: q.kind,
        status: q.status,
        environment: q.environment.clone(),
        name: q.name.clone(),
        label,
        privileged: q.privileged,
        expiring_before: parse_time("expiring_before", &q.expiring_before)?,
    };
    let (items, next) =
        s.registry
            .list_identities(&a, filter, parse_cursor(&q.cursor)?, q.limit.unwrap_or(100))?;
    Ok(Json(IdentityPage {
        items,
        next_cursor: next.map(|u| u.to_string()),
    }))
}

/// Create an identity. Privileged scopes put it in `pending_approval` with a change request.
#[utoipa::path(post, path = "/v1/identities", request_body = CreateIdentityRequest,
    responses((status = 201, body = IdentityChange), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_identity(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<CreateIdentityRequest>,
) -> ApiResult<(StatusCode, Json<IdentityChange>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.create_identity(&a, req).await?),
    ))
}

#[utoipa::path(get, path = "/v1/identities/{identity}",
    params(("identity" = String, Path, description = "id, NAME, or ENV/NAME (URL-encoded)")),
    responses((status = 200, body = Identity), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn get_identity(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
) -> ApiResult<Json<Identity>> {
    Ok(Json(s.registry.identity(&a, &r)?))
}

#[utoipa::path(patch, path = "/v1/identities/{identity}", request_body = UpdateIdentityRequest,
    params(("identity" = String, Path)), responses((status = 200, body = IdentityChange)))]
pub(crate) async fn update_identity(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
    Body(req): Body<UpdateIdentityRequest>,
) -> ApiResult<Json<IdentityChange>> {
    Ok(Json(s.registry.update_identity(&a, &r, req).await?))
}

async fn transition(
    s: AppState,
    a: warden_core::Actor,
    r: String,
    t: Transition,
    req: TransitionRequest,
) -> ApiResult<Json<Identity>> {
    Ok(Json(s.registry.transition(&a, &r, t, req.reason).await?))
}

#[utoipa::path(post, path = "/v1/identities/{identity}/suspend", request_body = TransitionRequest,
    params(("identity" = String, Path)), responses((status = 200, body = Identity)))]
pub(crate) async fn suspend_identity(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
    Body(req): Body<TransitionRequest>,
) -> ApiResult<Json<Identity>> {
    transition(s, a, r, Transition::Suspend, req).await
}

#[utoipa::path(post, path = "/v1/identities/{identity}/resume", request_body = TransitionRequest,
    params(("identity" = String, Path)), responses((status = 200, body = Identity)))]
pub(crate) async fn resume_identity(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
    Body(req): Body<TransitionRequest>,
) -> ApiResult<Json<Identity>> {
    transition(s, a, r, Transition::Resume, req).await
}

/// Retire: terminal; revokes every credential in the same transaction.
#[utoipa::path(post, path = "/v1/identities/{identity}/retire", request_body = TransitionRequest,
    params(("identity" = String, Path)), responses((status = 200, body = Identity)))]
pub(crate) async fn retire_identity(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
    Body(req): Body<TransitionRequest>,
) -> ApiResult<Json<Identity>> {
    transition(s, a, r, Transition::Retire, req).await
}

#[utoipa::path(get, path = "/v1/identities/{identity}/credentials",
    params(("identity" = String, Path)), responses((status = 200, body = CredentialList)))]
pub(crate) async fn list_credentials(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
) -> ApiResult<Json<CredentialList>> {
    Ok(Json(CredentialList {
        items: s.registry.list_credentials(&a, &r)?,
    }))
}

/// Issue a credential; a secret is in the response once.
#[utoipa::path(post, path = "/v1/identities/{identity}/credentials", request_body = IssueCredentialRequest,
    params(("identity" = String, Path)), responses((status = 201, body = IssuedCredential), (status = 400, body = Problem)))]
pub(crate) async fn issue_credential(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(r): PathArg<String>,
    Body(req): Body<IssueCredentialRequest>,
) -> ApiResult<(StatusCode, Json<IssuedCredential>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.issue_credential(&a, &r, req).await?),
    ))
}

#[utoipa::path(get, path = "/v1/credentials/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = Credential)))]
pub(crate) async fn get_credential(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<Credential>> {
    Ok(Json(s.registry.credential(&a, id)?))
}

#[utoipa::path(post, path = "/v1/credentials/{id}/rotate", request_body = RotateCredentialRequest,
    params(("id" = Uuid, Path)), responses((status = 201, body = IssuedCredential)))]
pub(crate) async fn rotate_credential(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<RotateCredentialRequest>,
) -> ApiResult<(StatusCode, Json<IssuedCredential>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.rotate_credential(&a, id, req).await?),
    ))
}

#[utoipa::path(post, path = "/v1/credentials/{id}/revoke", request_body = RevokeCredentialRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = Credential)))]
pub(crate) async fn revoke_credential(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<RevokeCredentialRequest>,
) -> ApiResult<Json<Credential>> {
    Ok(Json(
        s.registry.revoke_credential(&a, id, req.reason).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalQuery {
    status: Option<ChangeStatus>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/approvals", params(ApprovalQuery), responses((status = 200, body = ChangeRequestPage)))]
pub(crate) async fn list_approvals(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<ApprovalQuery>,
) -> ApiResult<Json<ChangeRequestPage>> {
    let (items, next) = s.registry.list_changes(
        &a,
        q.status,
        parse_cursor(&q.cursor)?,
        q.limit.unwrap_or(100),
    )?;
    Ok(Json(ChangeRequestPage {
        items,
        next_cursor: next.map(|u| u.to_string()),
    }))
}

#[utoipa::path(get, path = "/v1/approvals/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = ChangeRequest)))]
pub(crate) async fn get_approval(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<ChangeRequest>> {
    Ok(Json(s.registry.change(&a, id)?))
}

/// Approve a held change. The requester may not; an admin must.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", request_body = DecisionRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = ChangeRequest), (status = 403, body = Problem)))]
pub(crate) async fn approve(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<DecisionRequest>,
) -> ApiResult<Json<ChangeRequest>> {
    Ok(Json(s.registry.decide(&a, id, true, req.reason).await?))
}

#[utoipa::path(post, path = "/v1/approvals/{id}/deny", request_body = DecisionRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = ChangeRequest), (status = 403, body = Problem)))]
pub(crate) async fn deny(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<DecisionRequest>,
) -> ApiResult<Json<ChangeRequest>> {
    Ok(Json(s.registry.decide(&a, id, false, req.reason).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    target: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// RFC 3339 time, inclusive
    since: Option<String>,
    /// RFC 3339 time, exclusive
    until: Option<String>,
    /// Sequence number to continue after.
    cursor: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), responses((status = 200, body = AuditPage)))]
pub(crate) async fn list_audit(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let filter = AuditFilter {
        target: q.target.clone(),
        actor: q.actor.clone(),
        action: q.action.clone(),
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    s.registry.barrier().await?;
    let mut items = s
        .registry
        .list_audit(&a, &filter, q.cursor.unwrap_or(0), limit + 1)?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage {
        items,
        next_cursor: next,
    }))
}

/// Walk the audit chain and report the first tampered event.
#[utoipa::path(get, path = "/v1/audit/verify", responses((status = 200, body = AuditVerifyReport)))]
pub(crate) async fn verify_audit(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<AuditVerifyReport>> {
    s.registry.barrier().await?;
    let reg = s.registry.clone();
    let report = tokio::task::spawn_blocking(move || reg.verify_audit(&a))
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "verification task failed"))??;
    Ok(Json(report))
}

/// The audit sinks: where each delivers, its durable cursor, lag and last error (admins and
/// auditors).
#[utoipa::path(get, path = "/v1/audit/sinks", responses((status = 200, body = Vec<warden_types::SinkStatus>)))]
pub(crate) async fn audit_sinks(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<Vec<warden_types::SinkStatus>>> {
    Ok(Json(s.registry.sink_statuses(&a)?))
}

/// The token service's signing keys (admins and auditors).
#[utoipa::path(get, path = "/v1/signing-keys", responses((status = 200, body = SigningKeyList)))]
pub(crate) async fn list_signing_keys(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<SigningKeyList>> {
    Ok(Json(SigningKeyList {
        items: s.registry.list_signing_keys(&a)?,
    }))
}

/// Rotate the signing key (admins).
#[utoipa::path(post, path = "/v1/signing-keys/rotate", request_body = RotateSigningKeyRequest,
    responses((status = 201, body = SigningKeyInfo), (status = 403, body = Problem)))]
pub(crate) async fn rotate_signing_key(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<RotateSigningKeyRequest>,
) -> ApiResult<(StatusCode, Json<SigningKeyInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.rotate_signing_key(&a, req.immediately).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FindingQuery {
    status: Option<warden_types::FindingStatus>,
    kind: Option<warden_types::FindingKind>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Report findings of `warden scan` (at most 1,000 per request). A leaked Warden credential is
/// revoked at once (or flagged, per policy).
#[utoipa::path(post, path = "/v1/findings", request_body = warden_types::ReportFindingsRequest,
    responses((status = 200, body = warden_types::FindingsReported), (status = 403, body = Problem)))]
pub(crate) async fn report_findings(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<warden_types::ReportFindingsRequest>,
) -> ApiResult<Json<warden_types::FindingsReported>> {
    Ok(Json(s.registry.report_findings(&a, req).await?))
}

#[utoipa::path(get, path = "/v1/findings", params(FindingQuery), responses((status = 200, body = warden_types::FindingPage)))]
pub(crate) async fn list_findings(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<FindingQuery>,
) -> ApiResult<Json<warden_types::FindingPage>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let filter = warden_core::ports::FindingFilter {
        status: q.status,
        kind: q.kind,
    };
    let mut items = s
        .registry
        .list_findings(&a, &filter, parse_cursor(&q.cursor)?, limit + 1)?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|f| f.id.to_string())
    } else {
        None
    };
    Ok(Json(warden_types::FindingPage {
        items,
        next_cursor: next,
    }))
}

/// Run the hygiene checks now (admins); answers when the run is done.
#[utoipa::path(post, path = "/v1/hygiene/run",
    responses((status = 200, body = warden_types::HygieneReport), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn run_hygiene(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<warden_types::HygieneReport>> {
    let trigger = a.label();
    Ok(Json(s.registry.run_hygiene(&a, &trigger).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostureQuery {
    /// One team's NHIs only.
    team: Option<String>,
}

/// The OWASP NHI Top 10 posture of the estate (admins and auditors) or one team (its members).
#[utoipa::path(get, path = "/v1/reports/posture", params(PostureQuery),
    responses((status = 200, body = warden_types::PostureReport), (status = 403, body = Problem)))]
pub(crate) async fn posture_report(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<PostureQuery>,
) -> ApiResult<Json<warden_types::PostureReport>> {
    let registry = s.registry.clone();
    let report =
        tokio::task::spawn_blocking(move || registry.posture_report(&a, q.team.as_deref()))
            .await
            .map_err(|e| warden_core::CoreError::InvalidState(format!("report task: {e}")))??;
    Ok(Json(report))
}

/// Start an access-review campaign (admins).
#[utoipa::path(post, path = "/v1/reviews", request_body = warden_types::CreateReviewRequest,
    responses((status = 201, body = warden_types::ReviewCampaign), (status = 403, body = Problem)))]
pub(crate) async fn create_review(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<warden_types::CreateReviewRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<warden_types::ReviewCampaign>)> {
    Ok((
        axum::http::StatusCode::CREATED,
        Json(s.registry.create_review(&a, req).await?),
    ))
}

/// Access-review campaigns.
#[utoipa::path(get, path = "/v1/reviews", responses((status = 200, body = Vec<warden_types::ReviewCampaign>)))]
pub(crate) async fn list_reviews(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<Vec<warden_types::ReviewCampaign>>> {
    Ok(Json(s.registry.list_reviews(&a)?))
}

/// A campaign's queue: all items for admins and auditors, their teams' for members.
#[utoipa::path(get, path = "/v1/reviews/{id}/items", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<warden_types::ReviewItem>)))]
pub(crate) async fn review_items(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<Vec<warden_types::ReviewItem>>> {
    Ok(Json(s.registry.review_queue(&a, id)?))
}

/// Attest one NHI: keep, reduce or retire (retires it now), with a reason.
#[utoipa::path(post, path = "/v1/reviews/{id}/attest", request_body = warden_types::AttestRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = warden_types::ReviewItem), (status = 403, body = Problem)))]
pub(crate) async fn attest(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<warden_types::AttestRequest>,
) -> ApiResult<Json<warden_types::ReviewItem>> {
    Ok(Json(s.registry.attest(&a, id, req).await?))
}

/// Close a campaign (admins): its summary is final.
#[utoipa::path(post, path = "/v1/reviews/{id}/close", params(("id" = Uuid, Path)),
    responses((status = 200, body = warden_types::ReviewCampaign), (status = 403, body = Problem)))]
pub(crate) async fn close_review(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<warden_types::ReviewCampaign>> {
    Ok(Json(s.registry.close_review(&a, id).await?))
}

/// Background jobs' durable state: last run, outcome and summary (admins and auditors).
#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = Vec<warden_types::JobState>)))]
pub(crate) async fn list_jobs(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<Vec<warden_types::JobState>>> {
    Ok(Json(s.registry.list_jobs(&a)?))
}

/// Acknowledge, resolve or suppress a finding (admins).
#[utoipa::path(patch, path = "/v1/findings/{id}", request_body = warden_types::UpdateFindingRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = warden_types::Finding), (status = 403, body = Problem)))]
pub(crate) async fn update_finding(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<warden_types::UpdateFindingRequest>,
) -> ApiResult<Json<warden_types::Finding>> {
    Ok(Json(s.registry.update_finding(&a, id, req).await?))
}
