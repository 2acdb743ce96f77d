-- The kind of each refusal (invalid, not_found, conflict, forbidden,
-- payment_required), declared with the error that refused the command:
-- a replayed command answers with the same HTTP status as its first run.
ALTER TABLE command_outcomes ADD COLUMN error_kind text
    CHECK (error_kind IN ('invalid', 'not_found', 'conflict', 'forbidden', 'payment_required'));

-- Refusals recorded before kinds were get the kind their code had then
-- (the statuses the services answered), so their replays answer as the
-- first run did. The column is new and derived from the row's own code:
-- no recorded fact changes, but outcomes are append-only, so this
-- migration names the maintenance path for its own transaction.
SET LOCAL licensing.maintenance = 'rewrite-history';
UPDATE command_outcomes SET error_kind = CASE
    WHEN error_code = 'PRODUCT_NOT_FOUND' AND error_field = 'product' THEN 'invalid'
    WHEN error_code LIKE '%\_NOT\_FOUND' THEN 'not_found'
    WHEN error_code = 'FEE_NOT_ACCEPTED' THEN 'payment_required'
    WHEN error_code = 'INSUFFICIENT_SCOPE' THEN 'forbidden'
    WHEN error_code IN (
        'LICENSE_EXISTS', 'PRODUCT_EXISTS', 'API_KEY_EXISTS', 'CLIENT_EXISTS', 'UPSTREAM_EXISTS',
        'LICENSE_REVOKED', 'LICENSE_DELETED', 'LICENSE_RECLAIMED', 'LICENSE_SUSPENDED',
        'LICENSE_EXPIRED', 'LICENSE_NOT_SUSPENDED', 'LICENSE_NOT_EXPIRED', 'LICENSE_NOT_DUE',
        'LICENSE_PERPETUAL', 'API_KEY_REVOKED', 'CLIENT_REVOKED', 'TOO_MANY_ACTIVATIONS',
        'ACTIVATION_REVOKED', 'MIGRATION_LIMIT_REACHED', 'DEVICE_ALREADY_ACTIVATED',
        'NONCE_REUSED', 'CLOCK_ROLLBACK', 'TRIAL_ALREADY_USED', 'TRIAL_NOT_ALLOWED',
        'DOMAIN_ALREADY_BOUND', 'NOT_BOUND', 'DOMAIN_TAKEN', 'NO_SEATS_AVAILABLE', 'LEASE_ENDED',
        'LICENSE_FROM_OTHER_UPSTREAM', 'KID_TAKEN'
    ) THEN 'conflict'
    ELSE 'invalid'
END
WHERE status = 'rejected' AND error_code IS NOT NULL;
