-- What issuance knows of activations, from licensing.activation.events:
-- enough to recover a license key by activation file or by device.
CREATE TABLE activation_replica (
    activation_id     uuid   PRIMARY KEY,
    license_id        uuid   NOT NULL,
    components        jsonb  NOT NULL,
    component_digests text[] NOT NULL,
    status            text   NOT NULL
);
CREATE INDEX activation_replica_components ON activation_replica USING gin (component_digests);

-- The public keys activation files are signed with.
CREATE TABLE activation_keys (
    kid  text  PRIMARY KEY,
    jwk  jsonb NOT NULL
);
