-- WebAuthn security keys and passkeys (SQLite): two more factor kinds, their credentials, and
-- the ceremonies in flight.
--
-- SQLite cannot change a CHECK constraint, so `factors` is rebuilt with the new kinds. Its
-- child `totp_secrets` is rebuilt first against the new table (a DROP of the old `factors`
-- would otherwise cascade into the secrets): the new child refers to `factors_new`, which the
-- RENAME then rewrites to `factors`. Columns are listed, never `*`.
CREATE TABLE factors_new (
    id            TEXT PRIMARY KEY,
    subject_id    TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('totp', 'security_key', 'passkey')),
    label         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'active')),
    created_at    INTEGER NOT NULL,
    confirmed_at  INTEGER,
    last_used_at  INTEGER,
    session_id    TEXT,
    disabled_at   INTEGER
);
INSERT INTO factors_new (id, subject_id, kind, label, status, created_at, confirmed_at, last_used_at, session_id, disabled_at)
    SELECT id, subject_id, kind, label, status, created_at, confirmed_at, last_used_at, session_id, disabled_at FROM factors;

CREATE TABLE totp_secrets_new (
    factor_id       TEXT PRIMARY KEY REFERENCES factors_new (id) ON DELETE CASCADE,
    algorithm       TEXT NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits          INTEGER NOT NULL CHECK (digits IN (6, 8)),
    period          INTEGER NOT NULL CHECK (period IN (30, 60)),
    key_id          TEXT NOT NULL,
    nonce           BLOB NOT NULL,
    ciphertext      BLOB NOT NULL,
    last_used_step  INTEGER,
    last_used_at    INTEGER
);
INSERT INTO totp_secrets_new (factor_id, algorithm, digits, period, key_id, nonce, ciphertext, last_used_step, last_used_at)
    SELECT factor_id, algorithm, digits, period, key_id, nonce, ciphertext, last_used_step, last_used_at FROM totp_secrets;

DROP TABLE totp_secrets;   -- (and its trigger)
DROP TABLE factors;        -- no child refers to it any more: nothing cascades
ALTER TABLE factors_new RENAME TO factors;
ALTER TABLE totp_secrets_new RENAME TO totp_secrets;
CREATE INDEX factors_by_subject ON factors (subject_id, status);
CREATE INDEX totp_secrets_by_key ON totp_secrets (key_id);
-- As in 0006.
CREATE TRIGGER totp_secrets_accepted AFTER UPDATE OF last_used_at ON totp_secrets
BEGIN
    UPDATE attempts SET consecutive_failures = 0, lock_count = 0, locked_until = NULL, total_failures = 0
    WHERE kind = 'second_factor'
      AND subject_id = (SELECT subject_id FROM factors WHERE id = NEW.factor_id)
      AND (consecutive_failures <> 0 OR lock_count <> 0 OR locked_until IS NOT NULL OR total_failures <> 0);
END;

-- A WebAuthn credential of a factor: public, so not sealed. `credential` is webauthn-rs's
-- stored form (JSON: public key, counter, flags); the columns beside it are what we query
-- and show. `credential_id` is unique across every subject (a credential belongs to one).
CREATE TABLE webauthn_credentials (
    factor_id        TEXT PRIMARY KEY REFERENCES factors (id) ON DELETE CASCADE,
    credential_id    BLOB NOT NULL UNIQUE,
    credential       TEXT NOT NULL,
    sign_count       INTEGER NOT NULL,
    transports       TEXT NOT NULL DEFAULT '',
    backup_eligible  INTEGER NOT NULL,
    backup_state     INTEGER NOT NULL,
    aaguid           TEXT,
    user_verified    INTEGER NOT NULL
);

-- A ceremony in flight: webauthn-rs's state (the challenge), used once (deleted by the
-- statement that takes it), for 5 minutes. `bound_to` ties it to what began it: the session
-- (registration, re-authentication), the login challenge's hash (second step), the subject
-- (a service over gRPC), or nothing (passkey sign-in).
CREATE TABLE webauthn_ceremonies (
    id          TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('register', 'second_factor', 'reauth', 'passkey_login', 'verify')),
    subject_id  TEXT,
    bound_to    TEXT,
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
