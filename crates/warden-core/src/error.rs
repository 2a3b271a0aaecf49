use warden_crypto::TokenError;

/// What a store adapter reports. Messages carry no secret and no user data beyond names.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint was violated; the string says which.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database holds data this version cannot read.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The schema is newer than this binary, or otherwise incompatible.
    #[error("incompatible schema: {0}")]
    Schema(String),
    #[error("store failure: {0}")]
    Internal(String),
}

/// A domain error. Each variant maps to one stable error code in the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreError {
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    SelfApproval(String),
    #[error("{0}")]
    TtlTooLong(String),
    /// Too many failed authentications from the caller's address.
    #[error("too many failed authentications from this address; retry in {retry_after_secs}s")]
    Throttled { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoreError {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<TokenError> for CoreError {
    fn from(e: TokenError) -> Self {
        CoreError::Unauthenticated(e.to_string())
    }
}
