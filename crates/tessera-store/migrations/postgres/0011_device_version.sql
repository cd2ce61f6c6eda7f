-- A version of each subject's TOTP devices, for the replicas' device caches (see the store's
-- `verify` module): every change to a subject's devices in use bumps it in the same
-- transaction, so a verification's statement can tell that its cached devices are stale.
-- It lives in the subject's second-factor counters row, which the verification locks anyway
-- and which every change to the devices locks first (the lock order).
ALTER TABLE attempts ADD COLUMN device_version BIGINT NOT NULL DEFAULT 0;

-- The bump: a trigger rather than a line in each writer, so no writer can forget it (support
-- resets, key re-encryption and lockouts change devices too).
-- (`SET search_path FROM CURRENT`: the function finds this schema's tables whatever the
-- search path of the session that fires it.)
CREATE FUNCTION tessera_devices_changed() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    subject TEXT;
BEGIN
    -- (Nested: PL/pgSQL evaluates every operand, and totp_secrets has no subject_id.)
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'factors' THEN
        IF OLD.subject_id IS DISTINCT FROM NEW.subject_id THEN
            -- A device moved to another subject: the one it left changed too.
            INSERT INTO attempts (subject_id, kind, device_version) VALUES (OLD.subject_id, 'second_factor', 1)
            ON CONFLICT (subject_id, kind) DO UPDATE SET device_version = attempts.device_version + 1;
        END IF;
    END IF;
    IF TG_TABLE_NAME = 'totp_secrets' THEN
        SELECT subject_id INTO subject FROM factors WHERE id = NEW.factor_id;
    ELSIF TG_OP = 'DELETE' THEN
        subject := OLD.subject_id;
    ELSE
        subject := NEW.subject_id;
    END IF;
    IF subject IS NOT NULL THEN
        INSERT INTO attempts (subject_id, kind, device_version) VALUES (subject, 'second_factor', 1)
        ON CONFLICT (subject_id, kind) DO UPDATE SET device_version = attempts.device_version + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER factors_totp_added AFTER INSERT ON factors FOR EACH ROW
    WHEN (NEW.kind = 'totp' AND NEW.status = 'active') EXECUTE FUNCTION tessera_devices_changed();
CREATE TRIGGER factors_totp_changed AFTER UPDATE OF subject_id, kind, status, disabled_at ON factors FOR EACH ROW
    WHEN (OLD.kind = 'totp' OR NEW.kind = 'totp') EXECUTE FUNCTION tessera_devices_changed();
CREATE TRIGGER factors_totp_removed AFTER DELETE ON factors FOR EACH ROW
    WHEN (OLD.kind = 'totp' AND OLD.status = 'active') EXECUTE FUNCTION tessera_devices_changed();
CREATE TRIGGER totp_secrets_resealed AFTER UPDATE OF algorithm, digits, period, key_id, nonce, ciphertext
    ON totp_secrets FOR EACH ROW EXECUTE FUNCTION tessera_devices_changed();
