//! Tessera's pure domain: the security rules of multi-factor authentication.
//!
//! Architecture invariant: this crate does no I/O, has no async code and knows nothing of
//! sqlx, tonic or axum. Every time-dependent rule takes `now` (read from a [`clock::Clock`]
//! by the caller); every random value comes from the operating system's CSPRNG ([`random`]).

pub mod clock;
pub mod error;
pub mod factor;
pub mod otp;
pub mod otpauth;
pub mod password;
pub mod policy;
pub mod pwned;
pub mod qr;
pub mod random;
pub mod recovery;
pub mod redirect;
pub mod roles;
pub mod seal;
pub mod session;
pub mod throttle;
pub mod validate;

pub use error::CoreError;
