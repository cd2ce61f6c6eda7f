-- Forward auth (PostgreSQL): see the SQLite migration of the same name.
ALTER TABLE sessions ADD COLUMN forward_hash BYTEA;
CREATE UNIQUE INDEX sessions_by_forward_hash ON sessions (forward_hash) WHERE forward_hash IS NOT NULL;
ALTER TABLE login_challenges ADD COLUMN return_to TEXT;
