//! Service-token authentication: `authorization: Bearer <token>` on every call, checked
//! against SHA-256 hashes of the configured tokens in constant time.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// SHA-256 of a token (what configuration stores).
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The interceptor. Cheap to clone.
#[derive(Clone)]
pub struct TokenAuth {
    hashes: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenAuth({} tokens)", self.hashes.len())
    }
}

impl TokenAuth {
    /// Accept any token whose SHA-256 is in `hashes`.
    pub fn new(hashes: Vec<[u8; 32]>) -> Self {
        Self { hashes: Arc::new(hashes) }
    }

    /// Whether `token` is one of ours. Every configured hash is compared, in constant time.
    pub fn accepts(&self, token: &str) -> bool {
        let h = hash_token(token);
        let mut ok = subtle::Choice::from(0u8);
        for known in self.hashes.iter() {
            ok |= known.ct_eq(&h);
        }
        bool::from(ok)
    }
}

impl tonic::service::Interceptor for TokenAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <service token>` metadata"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <service token>`"))?;
        if self.accepts(token.trim()) {
            Ok(req)
        } else {
            metrics::counter!("tessera_grpc_unauthenticated_total").increment(1);
            Err(Status::unauthenticated("unknown service token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn bearer_tokens() {
        let mut a = TokenAuth::new(vec![hash_token("s3cret"), hash_token("other")]);
        assert!(a.call(req(Some("Bearer s3cret"))).is_ok());
        assert!(a.call(req(Some("Bearer other"))).is_ok());
        for bad in [None, Some("s3cret"), Some("Bearer wrong"), Some("Basic s3cret"), Some("Bearer ")] {
            let e = a.call(req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!e.message().contains("s3cret"));
        }
        assert!(!TokenAuth::new(vec![]).accepts(""));
    }
}
