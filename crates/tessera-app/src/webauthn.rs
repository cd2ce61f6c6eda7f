//! WebAuthn: security keys and passkeys, the second and third kinds of factor.
//!
//! The protocol is `webauthn-rs` (Kanidm's relying party, externally audited); this module is
//! the use cases around it: who may begin a ceremony, what finishing one does, and where its
//! state lives. The relying party's id and origin come from [`AppConfig::public_url`]; an IP
//! address cannot be a relying party, so without a name there (use `http://localhost:PORT`
//! locally) the WebAuthn use cases answer `FailedPrecondition`.
//!
//! # Ceremonies
//! Each "begin" keeps the library's state in the database ([`CEREMONY_TTL`], single use: the
//! statement that takes it deletes it) and returns the options for `navigator.credentials`
//! (the WebAuthn spec's JSON). The finish names the ceremony and brings the browser's answer.
//! A ceremony is bound to what began it and only that may finish it:
//! - a registration, to the session (pages) or the subject (a service over gRPC);
//! - a login's second step, to the login challenge;
//! - a re-authentication, to the session;
//! - a passkey sign-in, to nothing: the signed answer says whose passkey it is.
//!
//! # Who may do what
//! - Register a key or passkey: a session with recent authentication (`require_recent`), as
//!   for an authenticator app. The user's first factor brings recovery codes, ends every other
//!   session and raises this one (the rule of the first factor, as for a TOTP device).
//! - A security key proves the second factor only, after the password; it never signs in on
//!   its own. A passkey (discoverable, user-verified) signs in on its own at the second-factor
//!   level, and serves as a second factor after a password too.
//! - Assertions are not throttled: a signature cannot be guessed, each ceremony is used once,
//!   and each begin is a rate-limited request. A signature counter that does not move forward
//!   is refused and audited as a possible clone.

use crate::factors::{ConfirmOutcome, FirstFactor, first_factor_rule};
use crate::identity::{new_token, token_hash};
use crate::{App, AppError, ClientContext, LoginOutcome, Session};
use serde_json::json;
use tessera_core::CoreError;
use tessera_core::factor::{AuditKind, Factor, FactorKind};
use tessera_core::validate;
use tessera_store::{
    ChangeKind, Done, LiveSession, NewCeremony, NewWebauthnCredential, WebauthnCredential, WebauthnInsert, WebauthnUse,
};
use time::Duration;
use webauthn_rs::prelude::DiscoverableAuthentication;
use webauthn_rs::prelude::{
    Credential, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey,
    SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// How long a ceremony waits for the browser's answer.
pub const CEREMONY_TTL: Duration = Duration::minutes(5);

/// Most security keys and passkeys one subject may have.
pub const MAX_WEBAUTHN_CREDENTIALS: u32 = 20;

const REGISTER: &str = "register";
const SECOND_FACTOR: &str = "second_factor";
const REAUTH: &str = "reauth";
const PASSKEY_LOGIN: &str = "passkey_login";
const VERIFY: &str = "verify";

/// The relying party, built once from the public URL (or why it could not be).
pub(crate) struct RelyingParty(Result<Webauthn, String>);

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(w) => f.debug_tuple("RelyingParty").field(&w.get_allowed_origins()).finish(),
            Err(e) => f.debug_tuple("RelyingParty").field(e).finish(),
        }
    }
}

impl RelyingParty {
    /// The relying party of `public_url` (its host is the RP id, its origin the only one
    /// accepted), named `name` in the browser's prompt.
    pub(crate) fn new(public_url: &str, name: &str) -> Self {
        Self(build(public_url, name))
    }

    fn get(&self) -> Result<&Webauthn, AppError> {
        self.0.as_ref().map_err(|e| AppError::FailedPrecondition(e.clone()))
    }
}

fn build(public_url: &str, name: &str) -> Result<Webauthn, String> {
    let url = Url::parse(public_url).map_err(|e| format!("security keys: --public-url {public_url:?}: {e}"))?;
    let Some(host) = url.domain() else {
        return Err(format!(
            "security keys and passkeys need --public-url with a domain name, not {public_url:?} (an IP address \
             cannot be a WebAuthn relying party; use http://localhost:PORT locally)"
        ));
    };
    let host = host.to_owned();
    let origin = Url::parse(&url.origin().ascii_serialization()).map_err(|e| e.to_string())?;
    WebauthnBuilder::new(&host, &origin)
        .and_then(|b| b.rp_name(name).timeout(std::time::Duration::from_secs(300)).build())
        .map_err(|e| format!("security keys: relying party for {public_url:?}: {e}"))
}

/// A ceremony begun: the id to send back with the answer, and the options to hand to
/// `navigator.credentials.create` / `.get` (the WebAuthn spec's JSON, `{"publicKey": …}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyStart {
    /// The ceremony id (single use, [`CEREMONY_TTL`]).
    pub id: String,
    /// The options, JSON.
    pub options: String,
}

/// Why an assertion was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The ceremony is unknown, used, expired, or another's: begin again.
    CeremonyInvalid,
    /// The answer is not from a credential of this subject (or not one that may do this).
    UnknownCredential,
    /// The signature, origin, challenge or flags did not verify.
    NotVerified,
    /// The signature counter did not move forward: the credential may have been cloned.
    PossibleClone,
}

/// The result of an assertion. Malformed input is an [`AppError`], never an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Verified; the credential's factor.
    Accepted {
        /// The factor that answered.
        factor_id: String,
    },
    /// Refused.
    Refused(KeyRefusal),
}

/// Which second steps a login challenge's user can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecondSteps {
    /// An authenticator app (in use).
    pub totp: bool,
    /// A security key or passkey.
    pub keys: bool,
}

fn invalid(field: &'static str, msg: &str) -> AppError {
    AppError::Invalid(CoreError::invalid(field, msg))
}

fn json_err(e: serde_json::Error) -> AppError {
    AppError::FailedPrecondition(format!("ceremony state unreadable: {e}"))
}

/// The user handle of a subject: its UUID's 16 bytes (no personal data; subjects are UUIDs).
fn user_handle(subject: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(subject).map_err(|_| invalid("subject_id", "security keys need a UUID subject id"))
}

/// The AAGUID (authenticator model) in a registration's authenticator data, if the
/// authenticator gave one (all zeros means it did not).
fn aaguid(attestation_object: &[u8]) -> Option<String> {
    use serde_cbor_2::Value;
    let Ok(Value::Map(m)) = serde_cbor_2::from_slice::<Value>(attestation_object) else { return None };
    let auth_data = m.iter().find_map(|(k, v)| match (k, v) {
        (Value::Text(k), Value::Bytes(b)) if k == "authData" => Some(b),
        _ => None,
    })?;
    // rpIdHash (32) | flags (1) | signCount (4) | AAGUID (16) | … when flag AT (0x40) is set.
    let flags = *auth_data.get(32)?;
    let id: [u8; 16] = auth_data.get(37..53)?.try_into().ok()?;
    (flags & 0x40 != 0 && id != [0; 16]).then(|| Uuid::from_bytes(id).to_string())
}

/// Set `path` in JSON objects to `value`, creating objects on the way (a non-object on the way
/// is left alone).
fn set_path(v: &mut serde_json::Value, path: &[&str], value: serde_json::Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for p in parents {
        let Some(obj) = cur.as_object_mut() else { return };
        cur = obj.entry(*p).or_insert_with(|| json!({}));
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert((*last).to_owned(), value);
    }
}

fn transports(c: &Credential) -> String {
    c.transports
        .iter()
        .flatten()
        .filter_map(|t| serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_owned)))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_registration(response: &str) -> Result<RegisterPublicKeyCredential, AppError> {
    serde_json::from_str(response)
        .map_err(|_| invalid("response", "not a WebAuthn registration response (PublicKeyCredential JSON)"))
}

fn parse_assertion(response: &str) -> Result<PublicKeyCredential, AppError> {
    serde_json::from_str(response)
        .map_err(|_| invalid("response", "not a WebAuthn assertion response (PublicKeyCredential JSON)"))
}

fn credential_of(c: &WebauthnCredential) -> Result<Credential, AppError> {
    serde_json::from_str(&c.credential).map_err(|e| AppError::Store(tessera_store::StoreError::Corrupt(e.to_string())))
}

impl App {
    fn rp(&self) -> Result<&Webauthn, AppError> {
        self.webauthn.get()
    }

    /// Whether security keys and passkeys can be used here (`--public-url` names a host).
    pub fn webauthn_enabled(&self) -> bool {
        self.webauthn.0.is_ok()
    }

    /// Why security keys and passkeys cannot be used here, if they cannot.
    pub fn webauthn_problem(&self) -> Option<&str> {
        self.webauthn.0.as_ref().err().map(String::as_str)
    }

    async fn put_ceremony(
        &self,
        purpose: &'static str,
        subject: Option<&str>,
        bound_to: Option<String>,
        state: String,
        detail: serde_json::Value,
        options: String,
    ) -> Result<CeremonyStart, AppError> {
        let now = self.clock.now();
        let id = new_token()?.to_string();
        let c = NewCeremony {
            id: id.clone(),
            purpose,
            subject_id: subject.map(str::to_owned),
            bound_to,
            state,
            detail: detail.to_string(),
            created_at: now,
            expires_at: now + CEREMONY_TTL,
        };
        self.store.put_ceremony(&c).await?;
        Ok(CeremonyStart { id, options })
    }

    // ---- registration -----------------------------------------------------------------

    /// Begin registering a security key (`kind` [`FactorKind::SecurityKey`]) or a passkey
    /// ([`FactorKind::Passkey`]: discoverable, user verification required) named `label` in
    /// session `s` (needs recent authentication). Finish with [`App::finish_key_registration`]
    /// in the same session.
    pub async fn begin_key_registration(
        &self,
        s: &Session,
        label: &str,
        kind: FactorKind,
    ) -> Result<CeremonyStart, AppError> {
        self.require_recent(s).await?;
        let email = self.user_email(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        self.begin_registration(s.user_id(), &email, label, kind, format!("session:{}", s.id())).await
    }

    /// Finish the registration `s` began with the browser's answer (needs recent
    /// authentication still). The credential is an active factor at once; for the user's first
    /// factor the outcome carries recovery codes and this session's new token (see
    /// [`ConfirmOutcome::Confirmed`]). Never `Rejected`: an answer that does not verify is
    /// `Invalid` (and audited).
    pub async fn finish_key_registration(
        &self,
        s: &Session,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<ConfirmOutcome, AppError> {
        self.require_recent(s).await?;
        self.finish_registration(s.user_id(), &format!("session:{}", s.id()), Some(s), ceremony, response, ctx).await
    }

    /// Begin registering a credential for a subject (a service over gRPC): `user_name` is
    /// what the authenticator shows (e.g. the user's email).
    pub async fn begin_webauthn_registration(
        &self,
        subject_id: &str,
        label: &str,
        kind: FactorKind,
        user_name: &str,
    ) -> Result<CeremonyStart, AppError> {
        let subject = validate::subject_id(subject_id)?;
        let name = validate::display_name("user_name", user_name, validate::MAX_ACCOUNT_NAME_CHARS)?;
        self.begin_registration(subject, name, label, kind, format!("subject:{subject}")).await
    }

    /// Finish a registration a service began (gRPC).
    pub async fn finish_webauthn_registration(
        &self,
        subject_id: &str,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<ConfirmOutcome, AppError> {
        let subject = validate::subject_id(subject_id)?;
        self.finish_registration(subject, &format!("subject:{subject}"), None, ceremony, response, ctx).await
    }

    async fn begin_registration(
        &self,
        subject: &str,
        user_name: &str,
        label: &str,
        kind: FactorKind,
        bound_to: String,
    ) -> Result<CeremonyStart, AppError> {
        let label = validate::display_name("label", label, validate::MAX_LABEL_CHARS)?;
        if !kind.is_webauthn() {
            return Err(invalid("kind", "must be a security key or a passkey"));
        }
        let rp = self.rp()?;
        let handle = user_handle(subject)?;
        let existing = self.store.webauthn_credentials(subject).await?;
        if existing.len() >= MAX_WEBAUTHN_CREDENTIALS as usize {
            return Err(AppError::FailedPrecondition(format!(
                "at most {MAX_WEBAUTHN_CREDENTIALS} security keys and passkeys; remove one first"
            )));
        }
        // The authenticators this user already registered are excluded: one authenticator, one
        // credential.
        let exclude = Some(existing.iter().map(|c| c.credential_id.clone()).collect());
        let (options, state) = match kind {
            FactorKind::Passkey => {
                let (ccr, state) =
                    rp.start_passkey_registration(handle, user_name, user_name, exclude).map_err(refused)?;
                // A passkey signs in on its own: it must be discoverable (webauthn-rs leaves
                // the resident key to the authenticator; the options are the spec's JSON).
                let mut options = serde_json::to_value(&ccr).map_err(json_err)?;
                set_path(&mut options, &["publicKey", "authenticatorSelection", "residentKey"], json!("required"));
                set_path(&mut options, &["publicKey", "authenticatorSelection", "requireResidentKey"], json!(true));
                (serde_json::to_string(&options), serde_json::to_string(&state))
            }
            _ => {
                let (ccr, state) = rp
                    .start_securitykey_registration(handle, user_name, user_name, exclude, None, None)
                    .map_err(refused)?;
                // webauthn-rs asks a security key for credProtect "userVerificationRequired" with
                // user verification only preferred; Chromium refuses that combination outright
                // (NotSupportedError, found by the browser test). The extension is optional to
                // the library (not enforced; a missing answer is recorded as ignored), so it is
                // not asked for: a key is a second factor after the password either way.
                let mut options = serde_json::to_value(&ccr).map_err(json_err)?;
                let ext = options.get_mut("publicKey").and_then(|p| p.get_mut("extensions"));
                if let Some(ext) = ext.and_then(serde_json::Value::as_object_mut) {
                    ext.remove("credentialProtectionPolicy");
                    ext.remove("enforceCredentialProtectionPolicy");
                }
                (serde_json::to_string(&options), serde_json::to_string(&state))
            }
        };
        let detail = json!({ "label": label, "kind": kind.as_str() });
        self.put_ceremony(
            REGISTER,
            Some(subject),
            Some(bound_to),
            state.map_err(json_err)?,
            detail,
            options.map_err(json_err)?,
        )
        .await
    }

    async fn finish_registration(
        &self,
        subject: &str,
        bound_to: &str,
        session: Option<&Session>,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<ConfirmOutcome, AppError> {
        let rp = self.rp()?;
        let reg = parse_registration(response)?;
        let now = self.clock.now();
        let Some(c) = self.store.take_ceremony(ceremony, REGISTER, Some(bound_to), now).await? else {
            return Err(AppError::FailedPrecondition(
                "this registration expired or was already used; start again".into(),
            ));
        };
        let detail: serde_json::Value = serde_json::from_str(&c.detail).map_err(json_err)?;
        let text = |k: &str| detail.get(k).and_then(serde_json::Value::as_str);
        let kind = text("kind").and_then(FactorKind::parse).filter(|k| k.is_webauthn());
        let label = text("label").unwrap_or_default().to_owned();
        let result: Result<Credential, WebauthnError> = match kind {
            Some(FactorKind::Passkey) => {
                let state: PasskeyRegistration = serde_json::from_str(&c.state).map_err(json_err)?;
                rp.finish_passkey_registration(&reg, &state).map(Credential::from)
            }
            Some(_) => {
                let state: SecurityKeyRegistration = serde_json::from_str(&c.state).map_err(json_err)?;
                rp.finish_securitykey_registration(&reg, &state).map(Credential::from)
            }
            None => return Err(AppError::FailedPrecondition("ceremony of an unknown kind".into())),
        };
        let kind = kind.unwrap_or(FactorKind::SecurityKey);
        let cred = match result {
            Ok(c) => c,
            Err(e) => {
                let mut ev = self.event(now, subject, None, AuditKind::WebauthnRegistrationFailed, ctx);
                ev.detail = json!({ "kind": kind.as_str(), "error": e.to_string() }).to_string();
                self.store.append_audit(&ev).await?;
                return Err(invalid("response", &format!("the authenticator's answer was not accepted ({e})")));
            }
        };
        let factor_id = uuid::Uuid::new_v4().to_string();
        let row = NewWebauthnCredential {
            factor_id: factor_id.clone(),
            kind,
            label: label.clone(),
            credential_id: cred.cred_id.to_vec(),
            credential: serde_json::to_string(&cred).map_err(json_err)?,
            sign_count: cred.counter,
            transports: transports(&cred),
            backup_eligible: cred.backup_eligible,
            backup_state: cred.backup_state,
            aaguid: aaguid(&reg.response.attestation_object),
            user_verified: cred.user_verified,
            created_at: now,
        };
        let keyring = self.keys.get();
        let (shown, codes) = self.recovery_batch(&keyring, subject)?;
        let mut ev = self.event(now, subject, Some(&factor_id), AuditKind::WebauthnRegistered, ctx);
        ev.detail = json!({ "kind": kind.as_str(), "label": label, "aaguid": row.aaguid,
                            "transports": row.transports, "backup_eligible": row.backup_eligible })
        .to_string();
        let mut ev_codes = self.event(now, subject, None, AuditKind::RecoveryCodesGenerated, ctx);
        ev_codes.detail = json!({ "count": codes.len(), "reason": "first factor" }).to_string();
        let (token, hash) = self.fresh_token()?;
        let idle_cutoff = self.config.sessions.idle_cutoff(now);
        // The steps, in one change (on SQLite, one job of the writer thread).
        let (owner, sid) = (subject.to_owned(), session.map(|s| s.id().to_owned()));
        let (first, sessions_revoked, raised) = self
            .store
            .change_factors(subject, ChangeKind::Other, move |change| {
                Box::pin(async move {
                    let live = sid.as_deref().map(|id| LiveSession { id, now, idle_cutoff });
                    match change.insert_webauthn(&row, MAX_WEBAUTHN_CREDENTIALS, live).await? {
                        WebauthnInsert::Inserted => {}
                        WebauthnInsert::SessionGone => {
                            return Err(AppError::FailedPrecondition("this session has ended: sign in again".into()));
                        }
                        WebauthnInsert::LimitReached => {
                            return Err(AppError::FailedPrecondition(format!(
                                "at most {MAX_WEBAUTHN_CREDENTIALS} security keys and passkeys; remove one first"
                            )));
                        }
                        WebauthnInsert::AlreadyRegistered => {
                            return Err(AppError::FailedPrecondition(
                                "this authenticator is registered already".into(),
                            ));
                        }
                    }
                    change.audit(&ev).await?;
                    // The rule of the first factor, as for an authenticator app.
                    let added = FirstFactor {
                        codes: &codes,
                        audit: &ev_codes,
                        session_id: sid.as_deref(),
                        new_token_hash: &hash,
                    };
                    let rule = first_factor_rule(change, &owner, &added, now, idle_cutoff).await?;
                    Ok(Done::Commit(rule))
                })
            })
            .await?;
        metrics::counter!("tessera_enrolments_total", "stage" => "webauthn").increment(1);
        // Committed: what follows must not turn the answer into an error (the first factor's
        // recovery codes and the session's new token are shown only in it).
        if let Err(e) = self.factor_added_notice(subject, &label, sessions_revoked, now, ctx).await {
            tracing::error!(subject, error = %e, "could not queue the notice of a new security key");
        }
        let factor = Factor {
            id: factor_id,
            subject_id: subject.to_owned(),
            kind,
            label,
            status: tessera_core::factor::FactorStatus::Active,
            created_at: now,
            confirmed_at: Some(now),
            last_used_at: None,
            disabled_at: None,
            started_in: None,
        };
        Ok(ConfirmOutcome::Confirmed {
            factor: Box::new(factor),
            recovery_codes: if first { shown } else { Vec::new() },
            sessions_revoked,
            session_token: raised.then_some(token),
        })
    }

    // ---- assertions of a known subject ------------------------------------------------

    async fn begin_assertion(
        &self,
        subject: &str,
        purpose: &'static str,
        bound_to: String,
    ) -> Result<CeremonyStart, AppError> {
        let rp = self.rp()?;
        let creds = self.store.webauthn_credentials(subject).await?;
        if creds.is_empty() {
            return Err(AppError::FailedPrecondition("no security key or passkey is registered".into()));
        }
        // Presence is what a second factor needs; a passkey answers this too.
        let keys = creds.iter().map(|c| credential_of(c).map(SecurityKey::from)).collect::<Result<Vec<_>, _>>()?;
        let (rcr, state) = rp.start_securitykey_authentication(&keys).map_err(refused)?;
        let state = serde_json::to_string(&state).map_err(json_err)?;
        let mut options = serde_json::to_value(&rcr).map_err(json_err)?;
        // A passkey was registered with user verification required, and the library insists on
        // it at every use: when every credential is a passkey, say so to the browser.
        if creds.iter().all(|c| c.factor.kind == FactorKind::Passkey) {
            set_path(&mut options, &["publicKey", "userVerification"], json!("required"));
        }
        let options = options.to_string();
        self.put_ceremony(purpose, Some(subject), Some(bound_to), state, json!({}), options).await
    }

    /// Check an answer to a ceremony of `purpose` begun for `subject` by `bound_to`.
    async fn check_assertion(
        &self,
        subject: &str,
        purpose: &'static str,
        bound_to: &str,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<KeyOutcome, AppError> {
        let rp = self.rp()?;
        let pkc = parse_assertion(response)?;
        let now = self.clock.now();
        let Some(c) = self.store.take_ceremony(ceremony, purpose, Some(bound_to), now).await? else {
            return Ok(KeyOutcome::Refused(KeyRefusal::CeremonyInvalid));
        };
        if c.subject_id.as_deref() != Some(subject) {
            return Ok(KeyOutcome::Refused(KeyRefusal::CeremonyInvalid));
        }
        let state: SecurityKeyAuthentication = serde_json::from_str(&c.state).map_err(json_err)?;
        let creds = self.store.webauthn_credentials(subject).await?;
        let Some(stored) = creds.iter().find(|k| k.credential_id == pkc.get_credential_id()) else {
            self.key_rejected(subject, None, "unknown credential", ctx).await?;
            return Ok(KeyOutcome::Refused(KeyRefusal::UnknownCredential));
        };
        let key = SecurityKey::from(credential_of(stored)?);
        let result = rp.finish_securitykey_authentication(&pkc, &state);
        self.record_assertion(stored, result.map(|r| (r, key)), ctx).await
    }

    /// Record the library's verdict on an assertion of `stored`: audited either way; on
    /// success the counter and last use move on, unless another assertion got there first.
    async fn record_assertion(
        &self,
        stored: &WebauthnCredential,
        verdict: Result<(webauthn_rs::prelude::AuthenticationResult, SecurityKey), WebauthnError>,
        ctx: &ClientContext,
    ) -> Result<KeyOutcome, AppError> {
        let subject = stored.factor.subject_id.as_str();
        let factor_id = stored.factor.id.as_str();
        let now = self.clock.now();
        let (result, mut key) = match verdict {
            Ok(v) => v,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                return self.possible_clone(stored, ctx).await;
            }
            Err(e) => {
                self.key_rejected(subject, Some(factor_id), &e.to_string(), ctx).await?;
                return Ok(KeyOutcome::Refused(KeyRefusal::NotVerified));
            }
        };
        key.update_credential(&result);
        let cred: Credential = key.into();
        let mut ev = self.event(now, subject, Some(factor_id), AuditKind::WebauthnVerified, ctx);
        ev.detail = json!({ "kind": stored.factor.kind.as_str(), "user_verified": result.user_verified(),
                            "counter": result.counter() })
        .to_string();
        let json = serde_json::to_string(&cred).map_err(json_err)?;
        match self
            .store
            .record_webauthn_use(factor_id, &json, result.counter(), result.backup_state(), now, &ev)
            .await?
        {
            WebauthnUse::Recorded => {
                metrics::counter!("tessera_verifications_total", "kind" => "webauthn", "outcome" => "accepted")
                    .increment(1);
                Ok(KeyOutcome::Accepted { factor_id: factor_id.to_owned() })
            }
            WebauthnUse::CounterRegressed => self.possible_clone(stored, ctx).await,
            WebauthnUse::Gone => {
                self.key_rejected(subject, Some(factor_id), "removed meanwhile", ctx).await?;
                Ok(KeyOutcome::Refused(KeyRefusal::UnknownCredential))
            }
        }
    }

    /// A signature counter that did not move forward: two authenticators answer for this
    /// credential, and nobody can tell which is the genuine one (a clone can run its counter
    /// ahead). The credential is taken out of use (the WebAuthn spec's "SHOULD invalidate"), the
    /// user is told, and the answer refused; they remove it and add their key again.
    async fn possible_clone(&self, stored: &WebauthnCredential, ctx: &ClientContext) -> Result<KeyOutcome, AppError> {
        let now = self.clock.now();
        let subject = stored.factor.subject_id.as_str();
        tracing::warn!(subject, factor_id = %stored.factor.id, "webauthn signature counter went backwards: possible clone");
        let mut ev = self.event(now, subject, Some(&stored.factor.id), AuditKind::WebauthnCounterRegressed, ctx);
        ev.detail = json!({ "stored_counter": stored.sign_count, "label": stored.factor.label }).to_string();
        if self.store.disable_webauthn(&stored.factor.id, now, &ev).await? {
            let mut detail = crate::lifecycle::event_detail(now, ctx);
            if let Some(d) = detail.as_object_mut() {
                d.insert("label".into(), json!(stored.factor.label));
            }
            self.notify_user(subject, "key_possibly_cloned", detail, now).await?;
        }
        metrics::counter!("tessera_verifications_total", "kind" => "webauthn", "outcome" => "clone").increment(1);
        Ok(KeyOutcome::Refused(KeyRefusal::PossibleClone))
    }

    async fn key_rejected(
        &self,
        subject: &str,
        factor_id: Option<&str>,
        why: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let mut ev = self.event(self.clock.now(), subject, factor_id, AuditKind::WebauthnRejected, ctx);
        ev.detail = json!({ "error": why }).to_string();
        self.store.append_audit(&ev).await?;
        metrics::counter!("tessera_verifications_total", "kind" => "webauthn", "outcome" => "rejected").increment(1);
        Ok(())
    }

    /// Begin an assertion of one of the subject's credentials (a service over gRPC, e.g. a
    /// middleware offering keys as its second step).
    pub async fn begin_webauthn_assertion(&self, subject_id: &str) -> Result<CeremonyStart, AppError> {
        let subject = validate::subject_id(subject_id)?;
        self.begin_assertion(subject, VERIFY, format!("subject:{subject}")).await
    }

    /// Finish an assertion a service began (gRPC).
    pub async fn finish_webauthn_assertion(
        &self,
        subject_id: &str,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<KeyOutcome, AppError> {
        let subject = validate::subject_id(subject_id)?;
        self.check_assertion(subject, VERIFY, &format!("subject:{subject}"), ceremony, response, ctx).await
    }

    // ---- sign-in ----------------------------------------------------------------------

    /// Which second steps the user of a login challenge can take (`None`: the challenge is not
    /// live).
    pub async fn second_steps(&self, challenge: &str) -> Result<Option<SecondSteps>, AppError> {
        let Some(user) = self.store.challenge_user(&token_hash(challenge), self.clock.now()).await? else {
            return Ok(None);
        };
        let factors = self.store.list_factors(&user, self.clock.now()).await?;
        let live = |f: &&Factor| f.status == tessera_core::factor::FactorStatus::Active && f.disabled_at.is_none();
        Ok(Some(SecondSteps {
            totp: factors.iter().filter(live).any(|f| f.kind == FactorKind::Totp),
            keys: factors.iter().filter(live).any(|f| f.kind.is_webauthn()),
        }))
    }

    /// Begin the second step of a login with a security key or passkey (`None`: the challenge
    /// is not live).
    pub async fn begin_login_key(&self, challenge: &str) -> Result<Option<CeremonyStart>, AppError> {
        let hash = token_hash(challenge);
        let Some(user) = self.store.challenge_user(&hash, self.clock.now()).await? else { return Ok(None) };
        Ok(Some(self.begin_assertion(&user, SECOND_FACTOR, challenge_binding(&hash)).await?))
    }

    /// Second step of a login with a security key or passkey: `Authenticated` at the
    /// second-factor level, `KeyRefused` (the challenge stays usable: begin again), or
    /// `ChallengeInvalid`.
    pub async fn complete_login_key(
        &self,
        challenge: &str,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        parse_assertion(response)?;
        let hash = token_hash(challenge);
        let Some(user) = self.store.challenge_user(&hash, self.clock.now()).await? else {
            return Ok(LoginOutcome::ChallengeInvalid);
        };
        match self.check_assertion(&user, SECOND_FACTOR, &challenge_binding(&hash), ceremony, response, ctx).await? {
            KeyOutcome::Accepted { .. } => self.second_step_passed(challenge, &user, "security_key", ctx).await,
            KeyOutcome::Refused(r) => Ok(LoginOutcome::KeyRefused(r)),
        }
    }

    /// Begin a passkey sign-in (anyone may: the options name no user).
    pub async fn begin_passkey_login(&self) -> Result<CeremonyStart, AppError> {
        let rp = self.rp()?;
        let (mut rcr, state) = rp.start_discoverable_authentication().map_err(refused)?;
        // A button, not the autofill prompt: the browser asks at once.
        rcr.mediation = None;
        let state = serde_json::to_string(&state).map_err(json_err)?;
        let options = serde_json::to_string(&rcr).map_err(json_err)?;
        self.put_ceremony(PASSKEY_LOGIN, None, None, state, json!({}), options).await
    }

    /// Sign in with a passkey: the answer names the user (its user handle) and the credential,
    /// which must be a passkey of that user (a security key never signs in on its own) and
    /// must verify with user verification. The session is at the second-factor level (a
    /// verified passkey is something you have and something you are or know), so accounts that
    /// require MFA accept it.
    pub async fn complete_passkey_login(
        &self,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        let rp = self.rp()?;
        let pkc = parse_assertion(response)?;
        let now = self.clock.now();
        let Some(c) = self.store.take_ceremony(ceremony, PASSKEY_LOGIN, None, now).await? else {
            return Ok(LoginOutcome::ChallengeInvalid);
        };
        let state: DiscoverableAuthentication = serde_json::from_str(&c.state).map_err(json_err)?;
        let Ok((handle, cred_id)) = rp.identify_discoverable_authentication(&pkc) else {
            return Ok(LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
        };
        let Some(stored) = self.store.webauthn_credential(cred_id).await? else {
            tracing::info!("passkey sign-in with an unknown credential");
            return Ok(LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
        };
        // The signature first: until it verifies, the answer may be anyone's (a credential id is
        // no secret), so it writes nothing to the credential owner's trail.
        let cred = credential_of(&stored)?;
        let verdict = rp
            .finish_discoverable_authentication_v2(&pkc, state, &cred)
            .and_then(|r| if r.user_verified() { Ok(r) } else { Err(WebauthnError::UserNotVerified) });
        let result = match verdict {
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                self.possible_clone(&stored, ctx).await?;
                return Ok(LoginOutcome::KeyRefused(KeyRefusal::PossibleClone));
            }
            Err(e) => {
                tracing::info!(error = %e, "passkey sign-in answer did not verify");
                return Ok(LoginOutcome::KeyRefused(KeyRefusal::NotVerified));
            }
        };
        // Signed by the credential: now whether it may sign in on its own, and as whom.
        let subject = stored.factor.subject_id.clone();
        if handle.to_string() != subject || stored.factor.kind != FactorKind::Passkey {
            let why = if stored.factor.kind == FactorKind::Passkey {
                "user handle does not match"
            } else {
                "a security key cannot sign in without the password"
            };
            self.key_rejected(&subject, Some(&stored.factor.id), why, ctx).await?;
            return Ok(LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
        }
        let Some(user) = self.store.user_by_id(&subject).await?.filter(|u| u.email_verified) else {
            return Ok(LoginOutcome::KeyRefused(KeyRefusal::UnknownCredential));
        };
        match self.record_assertion(&stored, Ok((result, SecurityKey::from(cred))), ctx).await? {
            KeyOutcome::Accepted { .. } => {}
            KeyOutcome::Refused(r) => return Ok(LoginOutcome::KeyRefused(r)),
        }
        let now = self.clock.now();
        let (token, hash) = self.fresh_token()?;
        let mut session = self.session_row(&user.id, hash, 2, now, Some(now), ctx);
        session.password_verified_at = None;
        let mut ev = self.event(now, &user.id, Some(&stored.factor.id), AuditKind::LoginSucceeded, ctx);
        ev.detail = json!({ "assurance": "passkey" }).to_string();
        self.store.open_session(&session, &ev).await?;
        self.signed_in_beyond_password(token, &user.id, now, ctx).await
    }

    // ---- re-authentication ------------------------------------------------------------

    /// Begin re-authenticating session `s` with a security key or passkey; finish with
    /// [`App::reauthenticate`] and [`crate::Proof::Key`].
    pub async fn begin_reauth_key(&self, s: &Session) -> Result<CeremonyStart, AppError> {
        self.begin_assertion(s.user_id(), REAUTH, format!("session:{}", s.id())).await
    }

    /// Check a re-authentication answer of session `s`.
    pub(crate) async fn check_reauth_key(
        &self,
        s: &Session,
        ceremony: &str,
        response: &str,
        ctx: &ClientContext,
    ) -> Result<KeyOutcome, AppError> {
        self.check_assertion(s.user_id(), REAUTH, &format!("session:{}", s.id()), ceremony, response, ctx).await
    }
}

fn challenge_binding(hash: &[u8]) -> String {
    format!("challenge:{}", data_encoding::HEXLOWER.encode(hash))
}

/// A ceremony the library would not begin (a bug or a bad configuration, never the user's).
fn refused(e: WebauthnError) -> AppError {
    AppError::FailedPrecondition(format!("security keys: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_urls_host() {
        let rp = build("https://mfa.example.com/", "Tessera").unwrap();
        assert_eq!(rp.get_allowed_origins()[0].as_str(), "https://mfa.example.com/");
        assert!(build("http://localhost:8080", "Tessera").is_ok());
        let e = build("http://127.0.0.1:8080", "Tessera").unwrap_err();
        assert!(e.contains("domain name"), "{e}");
        assert!(build("not a url", "Tessera").is_err());
    }

    #[test]
    fn aaguid_is_read_only_when_present() {
        use serde_cbor_2::Value;
        let obj = |auth: Vec<u8>| {
            serde_cbor_2::to_vec(&Value::Map(
                [
                    (Value::Text("fmt".into()), Value::Text("none".into())),
                    (Value::Text("authData".into()), Value::Bytes(auth)),
                ]
                .into_iter()
                .collect(),
            ))
            .unwrap()
        };
        let mut auth = vec![0u8; 53];
        auth[32] = 0x45; // UP, UV, AT
        auth[37..53].copy_from_slice(&[0x11; 16]);
        assert_eq!(aaguid(&obj(auth.clone())).as_deref(), Some("11111111-1111-1111-1111-111111111111"));
        auth[37..53].copy_from_slice(&[0; 16]);
        assert_eq!(aaguid(&obj(auth.clone())), None, "zeros: no AAGUID given");
        auth[32] = 0x05;
        auth[37..53].copy_from_slice(&[0x11; 16]);
        assert_eq!(aaguid(&obj(auth)), None, "no attested credential data");
        assert_eq!(aaguid(b"junk"), None);
    }
}
