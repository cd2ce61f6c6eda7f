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

/// What a token may do; put in the request's extensions by the interceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every FactorService and IdentityService call except support actions.
    Service,
    /// Everything, including support actions (SupportResetMfa).
    Support,
}

/// The interceptor. Cheap to clone.
#[derive(Clone)]
pub struct TokenAuth {
    hashes: Arc<Vec<([u8; 32], Scope)>>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenAuth({} tokens)", self.hashes.len())
    }
}

impl TokenAuth {
    /// Accept any token whose SHA-256 is in `hashes`, with the service scope.
    pub fn new(hashes: Vec<[u8; 32]>) -> Self {
        Self::with_support(hashes, Vec::new())
    }

    /// Service-scoped and support-scoped token hashes.
    pub fn with_support(service: Vec<[u8; 32]>, support: Vec<[u8; 32]>) -> Self {
        let all =
            service.into_iter().map(|h| (h, Scope::Service)).chain(support.into_iter().map(|h| (h, Scope::Support)));
        Self { hashes: Arc::new(all.collect()) }
    }

    /// The scope of `token`, if it is one of ours. Every configured hash is compared, in
    /// constant time, whichever matches.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        let h = hash_token(token);
        let (mut service, mut support) = (subtle::Choice::from(0u8), subtle::Choice::from(0u8));
        for (known, scope) in self.hashes.iter() {
            let eq = known.ct_eq(&h);
            match scope {
                Scope::Service => service |= eq,
                Scope::Support => support |= eq,
            }
        }
        if bool::from(support) {
            Some(Scope::Support)
        } else if bool::from(service) {
            Some(Scope::Service)
        } else {
            None
        }
    }

    /// Whether `token` is one of ours.
    pub fn accepts(&self, token: &str) -> bool {
        self.scope_of(token).is_some()
    }
}

impl tonic::service::Interceptor for TokenAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <service token>` metadata"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <service token>`"))?;
        if let Some(scope) = self.scope_of(token.trim()) {
            req.extensions_mut().insert(scope);
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
        let a = TokenAuth::with_support(vec![hash_token("svc")], vec![hash_token("sup")]);
        assert_eq!(a.scope_of("svc"), Some(Scope::Service));
        assert_eq!(a.scope_of("sup"), Some(Scope::Support));
        assert_eq!(a.scope_of("nope"), None);
    }
}
