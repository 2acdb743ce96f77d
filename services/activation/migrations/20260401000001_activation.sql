-- Activation's own tables beside its event store.

-- The license replica is the event store's (shared by every context).
CREATE TABLE product_replica (
    code        text        PRIMARY KEY,
    features    jsonb       NOT NULL
);

-- Every seat, kept inline with the LicenseActivations events: look-up by
-- activation id, by device (any shared component digest), and the
-- revocation list.
CREATE TABLE activations (
    activation_id       uuid        PRIMARY KEY,
    license_id          uuid        NOT NULL,
    product             text        NOT NULL,
    kind                text        NOT NULL,
    fingerprint         text        NOT NULL,
    components          jsonb       NOT NULL,
    component_digests   text[]      NOT NULL,
    status              text        NOT NULL,
    activated_at        timestamptz NOT NULL,
    granted_at_sequence bigint      NOT NULL,
    last_client_time    timestamptz,
    ended_at            timestamptz
);
CREATE INDEX activations_license ON activations (license_id);
CREATE INDEX activations_components ON activations USING gin (component_digests);

-- Every trial, kept inline with the Trial events.
CREATE TABLE trials (
    trial_id            text        PRIMARY KEY,
    product             text        NOT NULL,
    fingerprint         text        NOT NULL,
    components          jsonb       NOT NULL,
    component_digests   text[]      NOT NULL,
    license_id          uuid        NOT NULL UNIQUE,
    issue_command_id    uuid        NOT NULL UNIQUE,
    status              text        NOT NULL,
    activation_id       uuid
);
CREATE INDEX trials_components ON trials USING gin (component_digests);

-- Public signing keys, kept inline with the SigningKey events.
CREATE TABLE signing_keys (
    kid          text        PRIMARY KEY,
    jwk          jsonb       NOT NULL,
    published_at timestamptz NOT NULL
);
