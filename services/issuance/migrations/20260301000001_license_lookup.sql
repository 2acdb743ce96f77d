-- Issuance's own lookups, written in the same transaction as the license's
-- events (eventstore::InlineProjection): find a license by key digest or
-- contract number, and find licenses due for expiry or reclaim.
CREATE TABLE license_lookup (
    license_id uuid        PRIMARY KEY,
    key_digest text        UNIQUE,
    contract   text,
    product    text        NOT NULL,
    customer   text        NOT NULL,
    status     text        NOT NULL,
    expires_at timestamptz,
    reclaim_at timestamptz
);

CREATE INDEX license_lookup_contract ON license_lookup (contract);
CREATE INDEX license_lookup_expiry ON license_lookup (status, expires_at);
CREATE INDEX license_lookup_reclaim ON license_lookup (status, reclaim_at);
