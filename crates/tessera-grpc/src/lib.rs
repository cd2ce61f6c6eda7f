//! The gRPC face of Tessera: `tessera.v1.FactorService` and `tessera.v1.IdentityService`,
//! thin over `tessera-app`.
//!
//! Each handler validates what the proto cannot (ids), converts to domain types, calls one
//! use case, converts back, and maps `AppError` to a `Status` in exactly one place
//! ([`status`]). Service-token authentication is an interceptor ([`TokenAuth`]); request ids,
//! the call's span and its metrics are tower layers ([`edge`]).
//!
//! Architecture invariant: only this crate (server side) and tessera-client know protobuf
//! types; nothing here touches the store.

mod auth;
mod convert;
pub mod edge;
mod identity;
mod service;

pub use auth::{Scope, TokenAuth, hash_token};
pub use identity::IdentitySvc;
pub use service::{FactorSvc, status};
pub use tessera_proto::FILE_DESCRIPTOR_SET;
pub use tessera_proto::v1::factor_service_server::FactorServiceServer;
pub use tessera_proto::v1::identity_service_server::IdentityServiceServer;
