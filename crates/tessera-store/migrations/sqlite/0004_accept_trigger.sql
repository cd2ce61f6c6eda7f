-- SQLite only: fold the side effects of accepting a code into the replay guard's statement.
-- On SQLite every write is a round trip to the single writer, so accepting a code is two
-- statements instead of four: the guard
--   UPDATE totp_secrets SET last_used_step = $step, last_used_at = $now
--   WHERE factor_id = $id AND (last_used_step IS NULL OR last_used_step < $step)
-- (which changes one row or none) and the audit insert. When the guard changes its row, this
-- trigger marks the factor used and resets the subject's second-factor counters, inside the
-- same statement and transaction. `UPDATE OF last_used_at` fires whenever an UPDATE sets that
-- column, whatever its value; only the accept sets it (confirmation and key re-encryption do
-- not). PostgreSQL does the same in one statement of CTEs instead.
ALTER TABLE totp_secrets ADD COLUMN last_used_at INTEGER;

CREATE TRIGGER totp_secrets_accepted AFTER UPDATE OF last_used_at ON totp_secrets
BEGIN
    UPDATE factors SET last_used_at = NEW.last_used_at WHERE id = NEW.factor_id;
    UPDATE attempts SET consecutive_failures = 0, lock_count = 0, locked_until = NULL
    WHERE kind = 'second_factor'
      AND subject_id = (SELECT subject_id FROM factors WHERE id = NEW.factor_id)
      AND (consecutive_failures <> 0 OR lock_count <> 0 OR locked_until IS NOT NULL);
END;
