-- A TOTP device's last use is totp_secrets.last_used_at, which the accept sets; reads take
-- COALESCE(totp_secrets.last_used_at, factors.last_used_at) (the latter holds the
-- confirmation time). The trigger no longer copies it into factors: one page fewer written
-- per accepted code. It still resets the subject's second-factor counters.
DROP TRIGGER totp_secrets_accepted;

CREATE TRIGGER totp_secrets_accepted AFTER UPDATE OF last_used_at ON totp_secrets
BEGIN
    UPDATE attempts SET consecutive_failures = 0, lock_count = 0, locked_until = NULL
    WHERE kind = 'second_factor'
      AND subject_id = (SELECT subject_id FROM factors WHERE id = NEW.factor_id)
      AND (consecutive_failures <> 0 OR lock_count <> 0 OR locked_until IS NOT NULL);
END;
