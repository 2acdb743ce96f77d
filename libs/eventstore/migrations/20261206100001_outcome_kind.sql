-- The kind of each refusal (invalid, not_found, conflict, forbidden,
-- payment_required), declared with the error that refused the command:
-- a replayed command answers with the same HTTP status as its first run.
-- NULL for outcomes recorded before kinds were (and for accepted ones).
ALTER TABLE command_outcomes ADD COLUMN error_kind text
    CHECK (error_kind IN ('invalid', 'not_found', 'conflict', 'forbidden', 'payment_required'));
