-- WebAuthn security keys and passkeys (PostgreSQL): see sqlite/0009_webauthn.sql.
ALTER TABLE factors DROP CONSTRAINT factors_kind_check;
ALTER TABLE factors ADD CONSTRAINT factors_kind_check CHECK (kind IN ('totp', 'security_key', 'passkey'));

CREATE TABLE webauthn_credentials (
    factor_id        TEXT PRIMARY KEY REFERENCES factors (id) ON DELETE CASCADE,
    credential_id    BYTEA NOT NULL UNIQUE,
    credential       TEXT NOT NULL,
    sign_count       BIGINT NOT NULL,
    transports       TEXT NOT NULL DEFAULT '',
    backup_eligible  BIGINT NOT NULL,
    backup_state     BIGINT NOT NULL,
    aaguid           TEXT,
    user_verified    BIGINT NOT NULL
);

CREATE TABLE webauthn_ceremonies (
    id          TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('register', 'second_factor', 'reauth', 'passkey_login', 'verify')),
    subject_id  TEXT,
    bound_to    TEXT,
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
