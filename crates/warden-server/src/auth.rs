//! Every `/v1` call is authenticated: [`Caller`] is the extractor that does it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
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
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
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
        let header = parts.headers.get(header::AUTHORIZATION);
        let bearer = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = bearer else {
            let mut p = ApiError::from(CoreError::Unauthenticated(
                "send `Authorization: Bearer <operator token or API key>`".into(),
            ));
            p.0.request_id = Some(rid);
            return Err(p);
        };
        match state.registry.authenticate(token, &rid, &src).await {
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
