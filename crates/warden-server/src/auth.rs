//! Every `/v1` call is authenticated: [`Caller`] is the extractor that does it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri};
use axum::http::header;
use axum::http::request::Parts;
use warden_core::{Actor, CoreError};

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller of a request.
pub struct Caller(pub Actor);

/// The request id: the client's `X-Request-Id` if it is short and printable, else a fresh one.
pub(crate) fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(fresh_request_id)
}

/// A fresh request id: a random per-process prefix and a counter. Unique without asking the OS
/// for randomness on every request (a UUIDv7 each time cost a `getrandom` call per request).
fn fresh_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::now_v7().as_u64_pair().1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}-{n:012x}")
}

pub(crate) fn source(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(parts);
        let src = source(parts);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        // `Bearer <operator token | API key | access token>` or `DPoP <access token>`.
        let scheme = |name: &str| {
            header.and_then(|h| {
                h.get(..name.len() + 1)
                    .filter(|p| p[..name.len()].eq_ignore_ascii_case(name) && p.ends_with(' '))
                    .map(|_| h[name.len() + 1..].trim())
            })
        };
        let (dpop_scheme, token) = match (scheme("Bearer"), scheme("DPoP")) {
            (Some(t), _) => (false, t),
            (None, Some(t)) => (true, t),
            (None, None) => {
                let mut p = ApiError::from(CoreError::Unauthenticated(
                    "send `Authorization: Bearer <operator token, API key or access token>` or `DPoP <access token>`".into(),
                ));
                p.0.request_id = Some(rid);
                return Err(p);
            }
        };
        let result =
            if dpop_scheme || (!token.starts_with("wdn_") && token.matches('.').count() == 2) {
                let mut proofs = parts.headers.get_all("dpop").iter();
                let proof = match (proofs.next(), proofs.next()) {
                    (Some(v), None) => v.to_str().ok(),
                    _ => None,
                };
                // The path as the client sent it (a nested router sees it without its prefix).
                let path = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or_else(|| parts.uri.path().to_owned(), |u| u.0.path().to_owned());
                let anonymous = Actor {
                    principal: warden_core::Principal::Anonymous,
                    request_id: rid.clone(),
                    source: src.clone(),
                };
                state
                    .registry
                    .authenticate_access_token(
                        token,
                        dpop_scheme,
                        proof,
                        parts
                            .extensions
                            .get::<std::sync::Arc<warden_core::registry::ClientCert>>()
                            .map(|c| &**c),
                        parts.method.as_str(),
                        &path,
                        &anonymous,
                    )
                    .await
            } else {
                state.registry.authenticate(token, &rid, &src).await
            };
        match result {
            Ok(actor) => Ok(Caller(actor)),
            Err(e) => {
                state
                    .metrics
                    .auth_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut p = ApiError::from(e);
                p.0.request_id = Some(rid);
                Err(p)
            }
        }
    }
}
