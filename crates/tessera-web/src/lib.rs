//! Tessera's web pages, server-rendered with askama over the identity and factor use cases:
//! sign-up, login (password, then a one-time or recovery code on its own page), logout,
//! security settings (set up an authenticator by QR code, recovery codes, devices, other
//! sessions), the user's activity, and accounts with their MFA policy.
//!
//! Security of the pages lives in one middleware (`guard.rs`): every response carries the
//! security headers (a CSP without inline script, `X-Frame-Options: DENY`, no-store caching…),
//! every POST must carry the CSRF token of its `__Host-` cookie (else 403), and then every POST
//! is rate-limited per client, the sign-in and code forms more tightly. Sessions are `__Host-` cookies (Secure,
//! HttpOnly, SameSite=Lax) holding a random token whose hash is all the database keeps.
//!
//! Architecture invariant: handlers are thin — they parse a form, call `tessera_app`, and
//! render; no rule about factors, sessions or accounts is decided here, and no SQL.

mod cookies;
mod forward;
mod guard;
mod limit;
mod pages;
mod views;

use std::sync::Arc;
use tessera_app::App;

pub use guard::TrustedProxies;
pub use limit::RateLimiter;

/// Settings of the pages.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// POSTs to the forms that try a password or a code (sign-up, login, the code and
    /// recovery-code pages, re-authentication) allowed per client per minute (a burst of this
    /// many, refilled evenly over the minute). 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Every other POST, per client per minute, in a budget of its own. 0 turns it off.
    pub post_rate_limit_per_minute: u32,
    /// Reverse proxies in front of the pages: a request from one of them has its client
    /// address taken from `X-Forwarded-For` (walked from the right, past trusted proxies).
    /// Empty (the default): the client address is always the socket's peer.
    pub trusted_proxies: TrustedProxies,
    /// Forward auth: the hosts a sign-in may return to (`rd`), besides this site's own paths.
    pub forward_domains: tessera_core::redirect::ForwardDomains,
    /// Forward auth across subdomains: the domain of the second, domain-wide cookie
    /// (`__Secure-tessera_fwd`) that `/auth/check` accepts. `None`: no such cookie.
    pub cookie_domain: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 20,
            post_rate_limit_per_minute: 60,
            trusted_proxies: TrustedProxies::default(),
            forward_domains: Default::default(),
            cookie_domain: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Web {
    pub(crate) app: App,
    pub(crate) config: Arc<WebConfig>,
    /// The sign-in forms' budget.
    pub(crate) sign_in_limit: Arc<RateLimiter>,
    /// Every other POST's budget.
    pub(crate) post_limit: Arc<RateLimiter>,
}

/// The pages' router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// the rate limit and the audit trail see the client's address.
pub fn router(app: App, config: WebConfig) -> axum::Router {
    let sign_in_limit = Arc::new(RateLimiter::new(config.rate_limit_per_minute));
    let post_limit = Arc::new(RateLimiter::new(config.post_rate_limit_per_minute));
    let hsts = web_hsts(&app);
    let csp = guard::csp(&config.forward_domains);
    let web = Web { app, config: Arc::new(config), sign_in_limit, post_limit };
    // `/auth/check` answers reverse proxies, not browsers: no CSRF cookie, no form limits.
    let pages = pages::routes().layer(axum::middleware::from_fn_with_state(web.clone(), guard::guard));
    guard::layers(pages.merge(forward::routes()), hsts, &csp).with_state(web)
}

/// HSTS when the public address is https (a year; not `includeSubDomains`: other hosts of the
/// domain are not ours to decide).
fn web_hsts(app: &App) -> bool {
    app.config().public_url.to_ascii_lowercase().starts_with("https://")
}
