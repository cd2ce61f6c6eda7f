-- Email verification (PostgreSQL): a user signs in only once their address is proven by a
-- mailed link (or vouched for by the service that created them). Users from before this
-- migration count as verified: they have been signing in with these addresses all along.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
UPDATE users SET email_verified_at = created_at;
-- 1 for a public sign-up: only such a row, left unconfirmed, may be replaced by the next
-- sign-up of its address (a service's unverified user never is).
ALTER TABLE users ADD COLUMN self_registered INTEGER NOT NULL DEFAULT 0;

-- Messages counted per user and kind (rate limits on notices that a stranger can cause, such
-- as "someone tried to sign up with your address").
CREATE INDEX outbox_by_user ON outbox (user_id, kind, created_at);
