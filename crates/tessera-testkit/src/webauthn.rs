//! [`SoftKey`]: a software authenticator for the ceremony tests, over webauthn-authenticator-rs's
//! `SoftPasskey` (the RustCrypto P-256 key of the crate's own tests): it signs what a real key
//! signs (the client data with the challenge and origin, the authenticator data with the RP id
//! hash, flags and counter), so the relying party verifies it like any other.
//!
//! Two things `SoftPasskey` cannot do are bridged in what it is *asked*, never in what it
//! signs: it keeps no resident keys, so a passkey registration's `residentKey: required` is
//! relaxed before it sees the options; and it finds its key only by name, so a discoverable
//! request (which names none) is given its credential id, and the answer carries the user handle
//! a resident key would return (a browser sends it unsigned too). The browser test covers real
//! resident keys with Chromium's virtual authenticator.

use serde_json::{Value, json};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// One authenticator holding (after [`SoftKey::register`]) one credential.
pub struct SoftKey {
    key: SoftPasskey,
    origin: Url,
    credential_id: Option<Value>,
    user_handle: Option<Value>,
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftKey")
            .field("origin", &self.origin.as_str())
            .field("credential_id", &self.credential_id)
            .finish()
    }
}

impl SoftKey {
    /// An authenticator in a browser at `origin` (e.g. `http://localhost:8080`), which verifies
    /// its user (PIN or biometrics) when asked.
    pub fn new(origin: &str) -> Self {
        Self {
            key: SoftPasskey::new(true),
            origin: Url::parse(origin).unwrap(),
            credential_id: None,
            user_handle: None,
        }
    }

    /// The same authenticator as seen from another origin (a phishing site's).
    pub fn at(mut self, origin: &str) -> Self {
        self.origin = Url::parse(origin).unwrap();
        self
    }

    /// Answer registration options (`{"publicKey": …}` JSON): the PublicKeyCredential JSON.
    pub fn register(&mut self, options: &str) -> String {
        let mut v: Value = serde_json::from_str(options).unwrap();
        let user_id = v["publicKey"]["user"]["id"].clone();
        if let Some(sel) = v["publicKey"].get_mut("authenticatorSelection").filter(|s| s.is_object()) {
            sel["residentKey"] = json!("discouraged");
            sel["requireResidentKey"] = json!(false);
        }
        let ccr: CreationChallengeResponse = serde_json::from_value(v).unwrap();
        let r = self.key.do_registration(self.origin.clone(), ccr).expect("the soft key registers");
        let out = serde_json::to_value(&r).unwrap();
        self.credential_id = Some(out["rawId"].clone());
        self.user_handle = Some(user_id);
        out.to_string()
    }

    /// Answer assertion options: the PublicKeyCredential JSON (see the module docs for a
    /// discoverable request).
    pub fn assert(&mut self, options: &str) -> String {
        self.try_assert(options).expect("the soft key answers")
    }

    /// Answer with this authenticator's own credential whatever the options allow (a key the
    /// server did not ask for: the server must refuse it, not the authenticator).
    pub fn assert_unasked(&mut self, options: &str) -> String {
        let mut v: Value = serde_json::from_str(options).unwrap();
        v["publicKey"]["allowCredentials"] = json!([]);
        self.assert(&v.to_string())
    }

    /// As [`SoftKey::assert`], or the authenticator's refusal (e.g. none of its credentials is
    /// allowed).
    pub fn try_assert(&mut self, options: &str) -> Result<String, String> {
        let mut v: Value = serde_json::from_str(options).unwrap();
        let named = v["publicKey"]["allowCredentials"].as_array().is_some_and(|a| !a.is_empty());
        if !named && let Some(id) = &self.credential_id {
            v["publicKey"]["allowCredentials"] = json!([{ "type": "public-key", "id": id }]);
        }
        let rcr: RequestChallengeResponse = serde_json::from_value(v).unwrap();
        let r = self.key.do_authentication(self.origin.clone(), rcr).map_err(|e| format!("{e:?}"))?;
        let mut out = serde_json::to_value(&r).unwrap();
        if out["response"]["userHandle"].is_null()
            && let Some(h) = &self.user_handle
        {
            out["response"]["userHandle"] = h.clone();
        }
        Ok(out.to_string())
    }
}
