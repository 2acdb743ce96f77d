-- Grant sync's own tables beside its event store. The license replica and
-- the API-key replica are the event store's (shared by every context).

-- Products this server can grant from: its issuance's catalog, or imported
-- from an upstream.
CREATE TABLE products (
    code        text        PRIMARY KEY,
    name        text        NOT NULL,
    features    jsonb       NOT NULL,
    bundles     jsonb       NOT NULL,
    upstream_id uuid
);

-- Every license this server grants, as a `contracts::grants::Grant`:
-- folded from issuance's events (upstream_id null) or imported from an
-- upstream (kept inline with the UpstreamLicense events).
CREATE TABLE grants (
    license_id  uuid        PRIMARY KEY,
    upstream_id uuid,
    product     text        NOT NULL,
    grant_doc   jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The registrable domain of each license, from the domain-binding events
-- (they may arrive before the license itself).
CREATE TABLE license_domains (
    license_id  uuid        PRIMARY KEY,
    domain      text,
    version     bigint      NOT NULL
);

-- Activations that may never be installed again, from activation's events
-- or an upstream's.
CREATE TABLE revocations (
    activation_id uuid        PRIMARY KEY,
    license_id    uuid        NOT NULL,
    reason        text        NOT NULL,
    revoked_at    timestamptz NOT NULL,
    upstream_id   uuid
);
CREATE INDEX revocations_license ON revocations (license_id);

-- License clients, kept inline with the LicenseClient events. Their
-- credentials are rows of api_keys (scope sync-client). `last_client_time`
-- is the latest time the client reported: a plain column, not an event.
CREATE TABLE clients (
    client_id        uuid        PRIMARY KEY,
    key_id           text        NOT NULL UNIQUE,
    name             text        NOT NULL,
    licenses         uuid[]      NOT NULL,
    revoked          boolean     NOT NULL DEFAULT false,
    registered_at    timestamptz NOT NULL,
    last_client_time timestamptz
);
CREATE INDEX clients_licenses ON clients USING gin (licenses);

-- Feature leases, kept inline with the LicenseLeases events, except
-- `deadline`, which heartbeats move (no event per heartbeat). The
-- scheduler reclaims a live lease once `deadline + grace` has passed:
-- it first marks it `expiring` (heartbeats stop being accepted), then
-- records LeaseExpired, which makes it `expired`. No index holds
-- `deadline` and pages keep free space, so a heartbeat is a HOT update:
-- no index entry written, no dead index tuple left.
CREATE TABLE leases (
    lease_id    uuid        PRIMARY KEY,
    license_id  uuid        NOT NULL,
    client_id   uuid        NOT NULL,
    feature     text        NOT NULL,
    features    text[]      NOT NULL,
    quantity    integer     NOT NULL,
    status      text        NOT NULL,
    ttl_secs    integer     NOT NULL,
    grace_secs  integer     NOT NULL,
    granted_at  timestamptz NOT NULL,
    deadline    timestamptz NOT NULL,
    ended_at    timestamptz
) WITH (fillfactor = 70);
CREATE INDEX leases_open ON leases (license_id) WHERE status IN ('live', 'expiring');
CREATE INDEX leases_client ON leases (client_id) WHERE status = 'live';
CREATE INDEX leases_license ON leases (license_id);

-- The change feed clients sync from. A cursor is a (tx_id, position)
-- pair; only rows of transactions below the snapshot's xmin are served,
-- in (tx_id, position) order, so a late-committing transaction is never
-- skipped (the relay's rule). `client_id` set: the change concerns one
-- client only (its lease was revoked).
CREATE TABLE sync_changes (
    position    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    license_id  uuid        NOT NULL,
    client_id   uuid,
    kind        text        NOT NULL,
    at          timestamptz NOT NULL,
    detail      jsonb       NOT NULL
);
CREATE INDEX sync_changes_order ON sync_changes (tx_id, position);
CREATE INDEX sync_changes_license ON sync_changes (license_id, tx_id, position);

-- The secret this server presents to an upstream. Never in an event or a
-- log; events carry its digest.
CREATE TABLE upstream_credentials (
    upstream_id uuid        PRIMARY KEY,
    secret      text        NOT NULL
);

-- Public keys that signed grant documents, kept inline with the SigningKey
-- events.
CREATE TABLE signing_keys (
    kid          text        PRIMARY KEY,
    jwk          jsonb       NOT NULL,
    published_at timestamptz NOT NULL
);
