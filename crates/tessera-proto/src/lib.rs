//! Tessera's gRPC contract, generated at build time from `proto/tessera/v1/*.proto`.
//!
//! Architecture invariant: protobuf types live here and are used only by tessera-grpc (the
//! server side) and tessera-client; no other crate sees them.
#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

/// `tessera.v1`.
pub mod v1 {
    tonic::include_proto!("tessera.v1");
}

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tessera_descriptor");
