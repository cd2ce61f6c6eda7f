-- Factor store (PostgreSQL). Timestamps are Unix milliseconds; ids are UUID text.
CREATE TABLE factors (
    id            TEXT PRIMARY KEY,
    subject_id    TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('totp')),
    label         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'active')),
    created_at    BIGINT NOT NULL,
    confirmed_at  BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX factors_by_subject ON factors (subject_id, status);

-- The sealed TOTP secret of a factor; last_used_step is the replay guard.
CREATE TABLE totp_secrets (
    factor_id       TEXT PRIMARY KEY REFERENCES factors (id) ON DELETE CASCADE,
    algorithm       TEXT NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits          BIGINT NOT NULL CHECK (digits IN (6, 8)),
    period          BIGINT NOT NULL CHECK (period IN (30, 60)),
    key_id          TEXT NOT NULL,
    nonce           BYTEA NOT NULL,
    ciphertext      BYTEA NOT NULL,
    last_used_step  BIGINT
);
CREATE INDEX totp_secrets_by_key ON totp_secrets (key_id);

-- Recovery codes: only an HMAC under a keyring key is stored.
CREATE TABLE recovery_codes (
    id          TEXT PRIMARY KEY,
    subject_id  TEXT NOT NULL,
    batch_id    TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    code_mac    BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    UNIQUE (subject_id, code_mac)
);
CREATE INDEX recovery_codes_by_key ON recovery_codes (key_id);

-- Consecutive failures per subject and kind ('second_factor'; 'password' later).
CREATE TABLE attempts (
    subject_id            TEXT NOT NULL,
    kind                  TEXT NOT NULL,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    lock_count            BIGINT NOT NULL DEFAULT 0,
    locked_until          BIGINT,
    PRIMARY KEY (subject_id, kind)
);

-- Append-only audit trail. Ids are UUIDv7 (time-ordered).
CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    subject_id  TEXT NOT NULL,
    factor_id   TEXT,
    actor       TEXT,
    kind        TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_by_subject ON audit_events (subject_id, id);
