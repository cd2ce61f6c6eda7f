-- "Trust this browser" (PostgreSQL): see sqlite/0010_trusted_browsers.sql.
CREATE TABLE trusted_browsers (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    BYTEA NOT NULL UNIQUE,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX trusted_browsers_by_user ON trusted_browsers (user_id);

-- An account that requires MFA may cap the trust: at most this many days (0: never); NULL: no
-- cap of its own (the 30 days of a trust). A sign-in applies the strictest of the user's.
ALTER TABLE accounts ADD COLUMN max_trust_days BIGINT;

-- A session a trusted browser opened: when that trust was made (NULL otherwise). Such a session
-- has proven no factor; an account whose cap the trust exceeds does not open to it.
ALTER TABLE sessions ADD COLUMN trusted_since BIGINT;
