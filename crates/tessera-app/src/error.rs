//! The use cases' error type: what a transport maps to a status code, once.

use tessera_core::CoreError;
use tessera_core::session::Recency;
use tessera_store::StoreError;

/// Why a use case could not run. A wrong code is *not* an error: it is an
/// [`Outcome`](crate::Outcome).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input; the message names the field and the rule (→ INVALID_ARGUMENT / 400).
    #[error("{0}")]
    Invalid(CoreError),
    /// No such thing for this subject (→ NOT_FOUND / 404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is well-formed but the state does not allow it (→ FAILED_PRECONDITION / 409).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (e.g. a member changing an account's policy) (→
    /// PERMISSION_DENIED / 403).
    #[error("{0}")]
    Forbidden(String),
    /// The action is sensitive and the session has not proven a factor (or, for a user without
    /// one, the password) recently enough: re-authenticate first (→ PERMISSION_DENIED / a
    /// redirect to the re-authentication page).
    #[error("{}", reauth_message(*.0))]
    ReauthRequired(Recency),
    /// A sealed secret could not be opened or the keyring is unusable (→ INTERNAL; logged).
    #[error("keyring: {0}")]
    Keys(CoreError),
    /// The database failed (→ UNAVAILABLE / INTERNAL; logged).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CoreError> for AppError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid { .. } | CoreError::OtpauthUri(_) => Self::Invalid(e),
            _ => Self::Keys(e),
        }
    }
}

fn reauth_message(r: Recency) -> &'static str {
    match r {
        Recency::NeedPassword => "recent authentication required: confirm your password first",
        _ => "recent authentication required: confirm with a current code or a recovery code first",
    }
}
