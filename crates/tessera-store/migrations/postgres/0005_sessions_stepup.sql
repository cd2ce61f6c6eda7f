-- Step-up and session integrity (PostgreSQL); the same as SQLite's 0006.
--
-- Sessions get a stable id (it survives token rotation: a pending device belongs to it), when
-- the password was last proven (mfa_verified_at already holds the second factor's), when the
-- session was last seen (the idle timeout), and where it was opened (the sessions list).
ALTER TABLE sessions ADD COLUMN id TEXT;
ALTER TABLE sessions ADD COLUMN password_verified_at BIGINT;
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
UPDATE sessions SET id = md5(random()::text || clock_timestamp()::text || token_hash::text),
                    password_verified_at = created_at, last_seen_at = created_at;
-- Sessions raised to the second-factor level through the old back door (a device confirmed in a
-- password-only session) cannot be told apart from honest ones: everyone signs in once more.
UPDATE sessions SET revoked_at = (extract(epoch FROM now()) * 1000)::bigint WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);

-- A pending device belongs to the session that started it (NULL: enrolled over gRPC by a
-- service). Pending devices from before have no owner: they expire here.
ALTER TABLE factors ADD COLUMN session_id TEXT;
-- A TOTP device taken out of use after 100 consecutive second-factor failures (it still counts
-- as the user's factor, so sign-in still asks for one; recovery codes still work).
ALTER TABLE factors ADD COLUMN disabled_at BIGINT;
DELETE FROM totp_secrets WHERE factor_id IN (SELECT id FROM factors WHERE status = 'pending');
DELETE FROM factors WHERE status = 'pending';

-- Failures since the last success, across locks (a lock resets consecutive_failures, not this).
ALTER TABLE attempts ADD COLUMN total_failures BIGINT NOT NULL DEFAULT 0;
UPDATE attempts SET total_failures = consecutive_failures;

-- Browsers that completed a sign-in of a user (a random __Host- cookie; only its hash here).
CREATE TABLE known_browsers (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, token_hash)
);

-- Invitations to an account, bound to a normalised email and to a code mailed to it (only its
-- SHA-256 here): accepted by that user, signed in, with the code (which proves the mailbox).
CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    email_norm   TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    invited_by   TEXT NOT NULL,
    code_hash    BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    mailed_at    BIGINT,
    accepted_at  BIGINT,
    closed_at    BIGINT
);
CREATE INDEX invitations_by_email ON invitations (email_norm);
CREATE INDEX invitations_by_account ON invitations (account_id);
