-- "Trust this browser" (SQLite): a browser where the user proved a second factor and ticked
-- the box may sign them in with the password alone for 30 days. Only the SHA-256 of its
-- random cookie is kept, with the user, a browser/OS label from its User-Agent, and when it was
-- trusted, last used and ends. Every trust of a user ends when a factor is added or removed,
-- the password is changed or reset, or support resets MFA.
CREATE TABLE trusted_browsers (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    BLOB NOT NULL UNIQUE,
    label         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX trusted_browsers_by_user ON trusted_browsers (user_id);

-- An account that requires MFA may cap the trust: at most this many days (0: never); NULL: no
-- cap of its own (the 30 days of a trust). A sign-in applies the strictest of the user's.
ALTER TABLE accounts ADD COLUMN max_trust_days INTEGER;

-- A session a trusted browser opened: when that trust was made (NULL otherwise). Such a session
-- has proven no factor; an account whose cap the trust exceeds does not open to it.
ALTER TABLE sessions ADD COLUMN trusted_since INTEGER;
