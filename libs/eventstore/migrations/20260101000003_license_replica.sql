-- Replica of the issuance facts other contexts need, folded from
-- licensing.issuance.events (contracts::license_view) in the same
-- transaction as the consumer's offset. `rev` rises on every change so
-- in-memory caches can pick up what changed since they last looked.
CREATE SEQUENCE IF NOT EXISTS license_replica_rev;
CREATE TABLE IF NOT EXISTS license_replica (
    license_id  uuid        PRIMARY KEY,
    key_digest  text        UNIQUE,
    product     text        NOT NULL,
    version     bigint      NOT NULL,
    view        jsonb       NOT NULL,
    rev         bigint      NOT NULL DEFAULT nextval('license_replica_rev')
);
CREATE INDEX IF NOT EXISTS license_replica_rev_idx ON license_replica (rev);
