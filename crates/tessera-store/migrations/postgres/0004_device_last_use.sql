-- A TOTP device's last use is totp_secrets.last_used_at, which the accept sets; reads take
-- COALESCE(totp_secrets.last_used_at, factors.last_used_at) (the latter holds the
-- confirmation time, and the last use recorded before this migration). Same as SQLite's 0005.
ALTER TABLE totp_secrets ADD COLUMN last_used_at BIGINT;
