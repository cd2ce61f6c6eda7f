-- Forward auth (SQLite).
--
-- A session may carry a second token, for the domain-wide cookie (`--cookie-domain`) that
-- reverse proxies pass to `/auth/check`: only its SHA-256 is kept, and it is accepted there and
-- nowhere else (the pages keep requiring the session's own `__Host-` cookie). It lives and dies
-- with its session row (revoked, expired, idle).
ALTER TABLE sessions ADD COLUMN forward_hash BLOB;
CREATE UNIQUE INDEX sessions_by_forward_hash ON sessions (forward_hash) WHERE forward_hash IS NOT NULL;

-- Where the sign-in returns once its second factor is proven (the app a reverse proxy sent the
-- user from; checked against `--forward-auth-domain` when stored and again when followed).
ALTER TABLE login_challenges ADD COLUMN return_to TEXT;
