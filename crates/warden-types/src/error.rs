use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable, greppable error codes. The HTTP status of each is fixed here so that every surface
/// (server, client, CLI exit codes) agrees. Never renumber or rename a released code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field is missing or invalid; `field` names it.
    InvalidField,
    /// The body is not valid JSON, or has the wrong shape, or an unknown field.
    MalformedRequest,
    /// The body exceeds the request size limit.
    PayloadTooLarge,
    /// The request needs `Content-Type: application/json`.
    UnsupportedMediaType,
    /// No credentials, or credentials that do not authenticate.
    Unauthenticated,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The thing named does not exist (or is not visible to the caller).
    NotFound,
    /// A name is already taken.
    AlreadyExists,
    /// The reference matches more than one identity; qualify it as `ENV/NAME` or use the id.
    Ambiguous,
    /// The transition or action is not allowed in the current state.
    InvalidState,
    /// The approver is the requester (four-eyes rule).
    SelfApproval,
    /// The requested TTL exceeds the configured maximum for the credential kind.
    TtlTooLong,
    /// The route does not exist.
    RouteNotFound,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// Too many failed authentications from this address; retry after `retry_after` seconds.
    TooManyRequests,
    /// The store is unavailable or overloaded; retry.
    Unavailable,
    /// An unexpected failure; the server log has the cause under the request id.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidField,
        ErrorCode::MalformedRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Ambiguous,
        ErrorCode::InvalidState,
        ErrorCode::SelfApproval,
        ErrorCode::TtlTooLong,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TooManyRequests,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Ambiguous => "ambiguous",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::SelfApproval => "self_approval",
            ErrorCode::TtlTooLong => "ttl_too_long",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidField | ErrorCode::MalformedRequest | ErrorCode::TtlTooLong => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden | ErrorCode::SelfApproval => 403,
            ErrorCode::NotFound | ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyExists | ErrorCode::Ambiguous | ErrorCode::InvalidState => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidField => "invalid field",
            ErrorCode::MalformedRequest => "malformed request",
            ErrorCode::PayloadTooLarge => "payload too large",
            ErrorCode::UnsupportedMediaType => "unsupported media type",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not found",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::Ambiguous => "ambiguous reference",
            ErrorCode::InvalidState => "invalid state",
            ErrorCode::SelfApproval => "requester cannot approve",
            ErrorCode::TtlTooLong => "ttl too long",
            ErrorCode::RouteNotFound => "route not found",
            ErrorCode::MethodNotAllowed => "method not allowed",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::Unavailable => "service unavailable",
            ErrorCode::Internal => "internal error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 9457 problem details, with Warden's stable `code` and, for field errors, the `field`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:warden:error:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `too_many_requests`: seconds until the caller may try again (also `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            type_: format!("urn:warden:error:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.http_status(),
            detail: detail.into(),
            code,
            field: None,
            request_id: None,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_stable_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
