//! What Tessera's integration tests share, written once: an `App` over a fresh SQLite file or a
//! fresh PostgreSQL schema, the rule for which PostgreSQL to test against, the test clock, the
//! code an authenticator shows, a client context, and the real `tessera serve` on ports the OS
//! chooses. Only dev-dependencies point here; the crate itself sits beside the binary, above
//! core, store and app (`tests/layering.rs` checks that for every crate).
//!
//! # Layout
//! - `harness.rs` — [`Harness`] (the app, its store, keyring and manual clock) and [`both!`],
//!   which runs one test body on SQLite and on PostgreSQL.
//! - `pg.rs` — [`pg_url`]: `TESSERA_TEST_DATABASE_URL`, or under `CI=true` the CI database
//!   (mandatory there), otherwise a loud `SKIPPED`; [`PgDatabase`], a whole database for a
//!   server under test.
//! - `codes.rs` — [`T0`], [`test_clock`], [`code_at`] and [`ctx`].
//! - `mail.rs` — [`read_mailbox`], [`wait_for_mail`]: the `.eml` files Tessera writes without
//!   an SMTP relay, read as a mail client would.
//! - `webauthn.rs` — [`SoftKey`], a software authenticator (webauthn-authenticator-rs's) that
//!   answers the options Tessera makes as a browser with a security key would.
//! - `serve.rs` — [`Serve`], the real binary; its path is a parameter because
//!   `CARGO_BIN_EXE_tessera` exists only in the binary crate's own tests.

// A test-support crate: a fixture that cannot be built should fail the test at once, with the
// reason, so unwrap, expect and panic are how it reports; none of this runs in a product.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod codes;
mod harness;
mod mail;
mod pg;
mod serve;
mod smtp;
mod webauthn;

pub use codes::{T0, code_at, code_with, ctx, ctx_from, test_clock};
pub use harness::{Harness, app_over};
pub use mail::{Mail, read_mailbox, wait_for_mail};
pub use pg::{CI_PG_URL, PgDatabase, loud, pg_url, pg_url_or_skip};
pub use serve::Serve;
pub use smtp::MailSink;
pub use webauthn::SoftKey;
