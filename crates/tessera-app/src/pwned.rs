//! The breached-password check (k-anonymity): online against a Pwned-Passwords-style range
//! API, or offline from a range directory; the result decides whether a new password is
//! refused. Only the 5-hex-character SHA-1 prefix ever leaves the machine, and requests ask
//! for padded responses (`Add-Padding: true`) so their size says nothing either.

use crate::AppError;
use std::path::PathBuf;
use std::time::Duration;
use tessera_core::CoreError;
use tessera_core::password::Password;
use tessera_core::pwned::RangeQuery;

/// Where ranges come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PwnedSource {
    /// No check.
    Off,
    /// `GET {base_url}/range/{PREFIX}`.
    Online {
        /// e.g. `https://api.pwnedpasswords.com`.
        base_url: String,
        /// Per-request timeout.
        timeout: Duration,
    },
    /// Files named `PREFIX` (or `PREFIX.txt`) holding `SUFFIX:COUNT` lines.
    Offline {
        /// The range directory.
        dir: PathBuf,
    },
}

/// What to do when the check cannot answer (timeout, error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Allow the password and log a warning.
    Open,
    /// Refuse with a clear message.
    Closed,
}

/// The check's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PwnedConfig {
    /// Where ranges come from.
    pub source: PwnedSource,
    /// Refuse a password seen in at least this many breaches.
    pub threshold: u64,
    /// When the source fails.
    pub failure: FailureMode,
}

impl Default for PwnedConfig {
    fn default() -> Self {
        Self { source: PwnedSource::Off, threshold: 1, failure: FailureMode::Open }
    }
}

/// The checker (holds the HTTP client).
#[derive(Debug, Clone)]
pub struct PwnedChecker {
    cfg: PwnedConfig,
    http: Option<reqwest::Client>,
}

impl PwnedChecker {
    /// Build a checker for `cfg`.
    pub fn new(cfg: PwnedConfig) -> Result<Self, AppError> {
        let http = match &cfg.source {
            PwnedSource::Online { timeout, .. } => {
                // reqwest is built without a default crypto provider: ring is ours.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Some(
                    reqwest::Client::builder()
                        .timeout(*timeout)
                        .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
                        .build()
                        .map_err(|e| AppError::FailedPrecondition(format!("breached-password client: {e}")))?,
                )
            }
            _ => None,
        };
        Ok(Self { cfg, http })
    }

    /// A checker that cannot reach an online source (its failure mode then decides).
    pub fn without_client(cfg: PwnedConfig) -> Self {
        Self { cfg, http: None }
    }

    /// How many breaches the source lists for `p` (0 if none); an error if it cannot say.
    async fn count(&self, p: &Password) -> Result<u64, String> {
        let q = RangeQuery::new(p);
        let body = match &self.cfg.source {
            PwnedSource::Off => return Ok(0),
            PwnedSource::Online { base_url, .. } => {
                let http = self.http.as_ref().ok_or("no HTTP client")?;
                let url = format!("{}/range/{}", base_url.trim_end_matches('/'), q.prefix());
                let resp = http.get(&url).header("Add-Padding", "true").send().await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("range API answered {}", resp.status()));
                }
                resp.text().await.map_err(|e| e.to_string())?
            }
            PwnedSource::Offline { dir } => {
                let a = dir.join(q.prefix());
                let b = dir.join(format!("{}.txt", q.prefix()));
                match tokio::fs::read_to_string(&a).await {
                    Ok(s) => s,
                    Err(_) => tokio::fs::read_to_string(&b)
                        .await
                        .map_err(|e| format!("range file {} unreadable: {e}", b.display()))?,
                }
            }
        };
        q.count_in(&body).map_err(|e| e.to_string())
    }

    /// Refuse a breached password (at or above the threshold). When the source fails, the
    /// failure mode decides.
    pub async fn check(&self, p: &Password) -> Result<(), AppError> {
        match self.count(p).await {
            Ok(n) if n >= self.cfg.threshold && n > 0 => Err(AppError::Invalid(CoreError::invalid(
                "password",
                format!("appears in {n} known data breaches; choose another"),
            ))),
            Ok(_) => Ok(()),
            Err(e) => match self.cfg.failure {
                FailureMode::Open => {
                    tracing::warn!(error = %e, "breached-password check unavailable; allowing the password (fail-open)");
                    Ok(())
                }
                FailureMode::Closed => Err(AppError::FailedPrecondition(
                    "the breached-password check is unavailable; try again later".into(),
                )),
            },
        }
    }
}
