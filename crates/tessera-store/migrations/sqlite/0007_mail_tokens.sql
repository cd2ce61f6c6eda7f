-- Links mailed to prove a mailbox (SQLite): a password reset now; email verification and email
-- change later. Only the token's SHA-256 is stored; a token is single use, expires, and is
-- voided by a newer one of its purpose, a sign-in or a password change.
CREATE TABLE mail_tokens (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,
    email       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX mail_tokens_by_user ON mail_tokens (user_id, purpose, created_at);

-- The token a queued message carries, sealed under the keyring like a TOTP secret (its
-- associated data binds the outbox row) and blanked once the message is delivered.
ALTER TABLE outbox ADD COLUMN secret_key_id TEXT;
ALTER TABLE outbox ADD COLUMN secret_nonce BLOB;
ALTER TABLE outbox ADD COLUMN secret_ciphertext BLOB;

-- Delivery retries back off (next_attempt_at), and a message that cannot be delivered is given
-- up (failed_at) instead of coming back at the head of the queue for ever.
ALTER TABLE outbox ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE outbox ADD COLUMN failed_at INTEGER;
