//! The test clock's start, the code an authenticator app shows, and where a test's requests
//! come from.

use tessera_app::ClientContext;
use tessera_core::clock::ManualClock;
use tessera_core::otp::{self, Secret, TotpParams};

/// 2026-01-01T00:00:10Z: 10 s into a 30 s step, so the next step's code is inside the window.
pub const T0: i64 = 1_767_225_610;

/// A manual clock at [`T0`]; it moves only when the test moves it.
pub fn test_clock() -> ManualClock {
    ManualClock::at_unix(T0)
}

/// The code an app shows for the base32 `secret` (default parameters) at `unix` seconds.
pub fn code_at(secret: &str, unix: i64) -> String {
    code_with(secret, TotpParams::default(), unix)
}

/// The code an app shows for the base32 `secret` with parameters `p` at `unix` seconds.
pub fn code_with(secret: &str, p: TotpParams, unix: i64) -> String {
    let s = Secret::from_base32(secret).unwrap();
    otp::format_code(otp::totp(&s, &p, unix), p.digits())
}

/// The client every test request comes from: a documentation address (203.0.113.7) and the
/// user agent `suite/1.0`, both of which the audit trail must record.
pub fn ctx() -> ClientContext {
    ctx_from("203.0.113.7")
}

/// As [`ctx`], from another address (the throttles count per address).
pub fn ctx_from(ip: &str) -> ClientContext {
    ClientContext { ip: Some(ip.into()), user_agent: Some("suite/1.0".into()), ..Default::default() }
}
