-- Identity (SQLite): users, accounts (organisations), memberships, login challenges, sessions.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    email_norm     TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    require_mfa  INTEGER NOT NULL DEFAULT 0 CHECK (require_mfa IN (0, 1)),
    grace_until  INTEGER,
    created_at   INTEGER NOT NULL
);

CREATE TABLE memberships (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    PRIMARY KEY (user_id, account_id)
);
CREATE INDEX memberships_by_account ON memberships (account_id);

-- A password-verified login waiting for its second factor. Only the token's hash is stored.
CREATE TABLE login_challenges (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX login_challenges_by_user ON login_challenges (user_id);

-- Sessions. Only the token's hash is stored; aal is 1 (password) or 2 (password + second factor).
CREATE TABLE sessions (
    token_hash       BLOB PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    aal              INTEGER NOT NULL CHECK (aal IN (1, 2)),
    mfa_verified_at  INTEGER,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    revoked_at       INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id);
