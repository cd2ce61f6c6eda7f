-- The reset of a subject's counters after an accepted code is now the writer thread's own
-- statement (the store's `sql::RESET`, the one every success runs), not a trigger on the
-- replay guard: the rule is written once. (PostgreSQL runs the same rule inside its
-- verification statement.)
DROP TRIGGER totp_secrets_accepted;
