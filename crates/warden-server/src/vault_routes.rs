//! The vault's handlers: secrets, rotation, re-wrapping, databases, dynamic credentials, leases.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use warden_core::ports::LeaseFilter;
use warden_types::*;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, Body, Params, PathArg};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretListQuery {
    /// Only secrets whose path starts with this.
    prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Secrets the caller may see (metadata only, never values).
#[utoipa::path(get, path = "/v1/secrets", params(SecretListQuery), responses((status = 200, body = SecretPage)))]
pub(crate) async fn list_secrets(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<SecretListQuery>,
) -> ApiResult<Json<SecretPage>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let mut items = s.registry.list_secrets(
        &a,
        q.prefix.as_deref().unwrap_or(""),
        q.cursor.as_deref(),
        limit + 1,
    )?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|x| x.path.clone())
    } else {
        None
    };
    Ok(Json(SecretPage {
        items,
        next_cursor: next,
    }))
}

/// Write a new version of a secret (created on its first write, with an owner).
#[utoipa::path(put, path = "/v1/secrets/{path}", request_body = PutSecretRequest,
    params(("path" = String, Path)), responses((status = 200, body = Secret), (status = 403, body = Problem)))]
pub(crate) async fn put_secret(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(path): PathArg<String>,
    Body(req): Body<PutSecretRequest>,
) -> ApiResult<Json<Secret>> {
    Ok(Json(s.registry.put_secret(&a, &path, req).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    /// A version (default: the current one).
    version: Option<u32>,
    /// Take a lease on this read for this many seconds.
    lease_ttl: Option<u64>,
}

/// Read a secret's value. Audited before the value is returned.
#[utoipa::path(get, path = "/v1/secrets/{path}", params(("path" = String, Path), ReadQuery),
    responses((status = 200, body = SecretRead), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn read_secret(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(path): PathArg<String>,
    Params(q): Params<ReadQuery>,
) -> ApiResult<Json<SecretRead>> {
    Ok(Json(
        s.registry
            .read_secret(&a, &path, q.version, q.lease_ttl)
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Erase the values (irreversible) instead of a soft delete.
    destroy: Option<bool>,
    /// With `destroy`: only this version.
    version: Option<u32>,
}

/// Delete a secret (soft: a new write restores it), or destroy its values.
#[utoipa::path(delete, path = "/v1/secrets/{path}", params(("path" = String, Path), DeleteQuery),
    responses((status = 200, body = Secret), (status = 403, body = Problem)))]
pub(crate) async fn delete_secret(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(path): PathArg<String>,
    Params(q): Params<DeleteQuery>,
) -> ApiResult<Json<Secret>> {
    let secret = if q.destroy.unwrap_or(false) {
        s.registry.destroy_secret(&a, &path, q.version).await?
    } else {
        s.registry.delete_secret(&a, &path).await?
    };
    Ok(Json(secret))
}

/// A secret's metadata and versions.
#[utoipa::path(get, path = "/v1/vault/metadata/{path}", params(("path" = String, Path)),
    responses((status = 200, body = Secret), (status = 404, body = Problem)))]
pub(crate) async fn secret_metadata(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(path): PathArg<String>,
) -> ApiResult<Json<Secret>> {
    Ok(Json(s.registry.secret_metadata(&a, &path)?))
}

/// Rotate a secret now by its rotation policy.
#[utoipa::path(post, path = "/v1/vault/rotate/{path}", params(("path" = String, Path)),
    responses((status = 200, body = RotationOutcome), (status = 403, body = Problem)))]
pub(crate) async fn rotate_secret(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(path): PathArg<String>,
) -> ApiResult<Json<RotationOutcome>> {
    Ok(Json(s.registry.rotate_secret(&a, &path).await?))
}

/// Move every data key to the current master key (admins).
#[utoipa::path(post, path = "/v1/vault/rewrap", responses((status = 200, body = RewrapReport), (status = 403, body = Problem)))]
pub(crate) async fn rewrap(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<RewrapReport>> {
    Ok(Json(s.registry.rewrap_vault(&a, usize::MAX).await?))
}

/// Register (or update) a PostgreSQL connection for dynamic credentials and rotation.
#[utoipa::path(post, path = "/v1/vault/databases", request_body = AddDatabaseRequest,
    responses((status = 201, body = Secret), (status = 403, body = Problem)))]
pub(crate) async fn add_database(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<AddDatabaseRequest>,
) -> ApiResult<(StatusCode, Json<Secret>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.add_database(&a, req).await?),
    ))
}

/// A PostgreSQL login created for this request, on a lease.
#[utoipa::path(post, path = "/v1/creds/postgres", request_body = PostgresCredsRequest,
    responses((status = 201, body = PostgresCreds), (status = 403, body = Problem)))]
pub(crate) async fn postgres_creds(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<PostgresCredsRequest>,
) -> ApiResult<(StatusCode, Json<PostgresCreds>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.registry.issue_postgres_creds(&a, req).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseQuery {
    prefix: Option<String>,
    identity: Option<Uuid>,
    /// Only leases not yet revoked.
    active: Option<bool>,
    limit: Option<usize>,
}

/// Leases the caller may see.
#[utoipa::path(get, path = "/v1/leases", params(LeaseQuery), responses((status = 200, body = LeasePage)))]
pub(crate) async fn list_leases(
    State(s): State<AppState>,
    Caller(a): Caller,
    Params(q): Params<LeaseQuery>,
) -> ApiResult<Json<LeasePage>> {
    let filter = LeaseFilter {
        prefix: q.prefix,
        identity: q.identity,
        active_only: q.active.unwrap_or(false),
    };
    let limit = q.limit.unwrap_or(1_000).clamp(1, 10_000);
    Ok(Json(LeasePage {
        items: s.registry.list_leases(&a, &filter, limit)?,
    }))
}

/// Extend a lease (never past its maximum).
#[utoipa::path(post, path = "/v1/leases/{id}/renew", request_body = RenewLeaseRequest,
    params(("id" = Uuid, Path)), responses((status = 200, body = VaultLease)))]
pub(crate) async fn renew_lease(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
    Body(req): Body<RenewLeaseRequest>,
) -> ApiResult<Json<VaultLease>> {
    Ok(Json(s.registry.renew_lease(&a, id, req.ttl_secs).await?))
}

/// Revoke a lease now (a dynamic login is dropped).
#[utoipa::path(post, path = "/v1/leases/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 200, body = VaultLease)))]
pub(crate) async fn revoke_lease(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathArg(id): PathArg<Uuid>,
) -> ApiResult<Json<VaultLease>> {
    Ok(Json(s.registry.revoke_lease(&a, id).await?))
}

/// Revoke every active lease under a path prefix (admins).
#[utoipa::path(post, path = "/v1/leases/revoke-prefix", request_body = RevokePrefixRequest,
    responses((status = 200, body = LeasesRevoked)))]
pub(crate) async fn revoke_prefix(
    State(s): State<AppState>,
    Caller(a): Caller,
    Body(req): Body<RevokePrefixRequest>,
) -> ApiResult<Json<LeasesRevoked>> {
    Ok(Json(s.registry.revoke_lease_prefix(&a, &req.prefix).await?))
}

/// Rotate the password Warden logs in to its database with (admins; PostgreSQL storage with a
/// password file).
#[utoipa::path(post, path = "/v1/vault/store-credential/rotate",
    responses((status = 200, body = RotationOutcome), (status = 403, body = Problem)))]
pub(crate) async fn rotate_store_credential(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<RotationOutcome>> {
    Ok(Json(s.registry.rotate_store_credential(&a).await?))
}
