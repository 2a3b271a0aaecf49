//! Errors as RFC 9457 problem details, and extractors whose rejections are problems too.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use warden_core::{CoreError, StoreError};
use warden_types::{ErrorCode, Problem};

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError(pub Box<Problem>);

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError(Box::new(Problem::new(code, detail)))
    }
}

/// The one mapping from domain errors to stable codes. Internal causes are logged, not returned.
impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let (code, detail, field) = match e {
            CoreError::InvalidField { field, reason } => (
                ErrorCode::InvalidField,
                format!("{field}: {reason}"),
                Some(field),
            ),
            CoreError::NotFound(what) => (ErrorCode::NotFound, format!("{what} not found"), None),
            CoreError::AlreadyExists(m) => (ErrorCode::AlreadyExists, m, None),
            CoreError::Ambiguous(m) => (ErrorCode::Ambiguous, m, None),
            CoreError::Unauthenticated(m) => (ErrorCode::Unauthenticated, m, None),
            CoreError::Forbidden(m) => (ErrorCode::Forbidden, m, None),
            CoreError::InvalidState(m) => (ErrorCode::InvalidState, m, None),
            CoreError::SelfApproval(m) => (ErrorCode::SelfApproval, m, None),
            CoreError::TtlTooLong(m) => (ErrorCode::TtlTooLong, m, Some("ttl_seconds".into())),
            CoreError::Throttled { retry_after_secs } => {
                let mut p = Problem::new(
                    ErrorCode::TooManyRequests,
                    format!(
                        "too many failed authentications from this address; retry in {retry_after_secs}s"
                    ),
                );
                p.retry_after = Some(retry_after_secs);
                return ApiError(Box::new(p));
            }
            CoreError::Store(StoreError::Unavailable(m)) => {
                tracing::warn!(cause = %m, "store unavailable");
                (
                    ErrorCode::Unavailable,
                    "the store is unavailable; retry shortly".into(),
                    None,
                )
            }
            CoreError::Store(StoreError::Conflict(m)) => {
                tracing::warn!(cause = %m, "unexpected store conflict");
                (
                    ErrorCode::AlreadyExists,
                    "a conflicting record exists".into(),
                    None,
                )
            }
            CoreError::Store(e) => {
                tracing::error!(cause = %e, "store failure");
                (
                    ErrorCode::Internal,
                    "internal error; see the server log".into(),
                    None,
                )
            }
        };
        let mut p = Problem::new(code, detail);
        p.field = field;
        ApiError(Box::new(p))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.0.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
            // Access tokens may also come DPoP-bound (RFC 9449 §7.1).
            res.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("DPoP algs=\"EdDSA ES256 PS256 RS256\""),
            );
        }
        res
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body exceeds the size limit",
            )
        }
        JsonRejection::JsonDataError(e) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body does not fit the schema: {}", e.body_text()),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        other => ApiError::new(ErrorCode::MalformedRequest, other.body_text()),
    }
}

/// `Json` whose rejections are problem details.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

/// `Query` whose rejections are problem details.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("invalid query: {}", r.body_text()),
                )
            })
    }
}

/// `Path` whose rejections are problem details.
pub struct PathArg<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathArg(p.0))
            .map_err(|r: PathRejection| {
                ApiError::new(
                    ErrorCode::InvalidField,
                    format!("invalid path parameter: {}", r.body_text()),
                )
            })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
