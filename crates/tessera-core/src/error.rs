//! The one error type of the core: every malformed input or failed check says what went wrong.

/// What the core refuses, and why. Messages are safe to show to a caller: none holds a secret.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A field of the caller's input is malformed; the message names the field and the rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The name of the offending field (as the caller knows it).
        field: &'static str,
        /// What rule it broke.
        reason: String,
    },
    /// An `otpauth://` URI could not be parsed.
    #[error("invalid otpauth URI: {0}")]
    OtpauthUri(String),
    /// A sealed value could not be opened: wrong key, tampered bytes or moved to another row.
    #[error("sealed secret could not be opened (tampered, moved to another row, or wrong key)")]
    OpenFailed,
    /// The keyring has no key with this id.
    #[error("the keyring has no key named {0:?}")]
    UnknownKey(String),
    /// The keyring text is malformed.
    #[error("keyring: {0}")]
    Keyring(String),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// QR code rendering failed (the data is too long for a QR code).
    #[error("QR code: {0}")]
    Qr(String),
}

impl CoreError {
    /// Shorthand for [`CoreError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }
}
