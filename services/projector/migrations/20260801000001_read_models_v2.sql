-- Read models, second form. They are rebuildable by definition, so this
-- migration drops the first form and lets the consumers fill them again from
-- the start of the event topics (their stored offsets are removed with them).
--
-- Every column is a function of the events alone (no now()), so a rebuild
-- produces the same rows as the live projection, row for row.

DROP TABLE license_state;
DROP TABLE audit_trail;
DELETE FROM consumer_offsets WHERE consumer LIKE '%.projector.read-models';

-- One row per event of every context: who, what, when, which command.
CREATE TABLE audit_trail (
    event_id        uuid        PRIMARY KEY,
    context         text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    global_position bigint      NOT NULL,
    -- The license an event concerns, whatever its aggregate.
    license_id      uuid,
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor_kind      text        NOT NULL,
    actor_id        text        NOT NULL,
    command_id      uuid        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    -- json, not jsonb: the text exactly as the event store holds it, which
    -- is what the hash chain covers (dispute bundles re-hash it).
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    prev_hash       text        NOT NULL,
    hash            text        NOT NULL
);

CREATE INDEX audit_trail_license ON audit_trail (license_id, event_id);
CREATE INDEX audit_trail_actor ON audit_trail (actor_id, event_id);
CREATE INDEX audit_trail_type ON audit_trail (event_type, event_id);
CREATE INDEX audit_trail_correlation ON audit_trail (correlation_id, event_id);
CREATE INDEX audit_trail_aggregate ON audit_trail (aggregate_type, aggregate_id, sequence);

-- One row per license, joining what every context says about it. `state` is
-- domain::LicenseState; the other columns are copies kept for filtering. A
-- row may exist before issuance's first event has arrived (state without a
-- license part, status null).
CREATE TABLE license_state (
    license_id       uuid        PRIMARY KEY,
    state            jsonb,
    status           text,
    kind             text,
    product          text,
    edition          text,
    customer         text,
    expires_at       timestamptz,
    live_activations integer,
    leases_in_use    integer,
    domain           text,
    updated_at       timestamptz
);

CREATE INDEX license_state_status ON license_state (status, license_id);
CREATE INDEX license_state_product ON license_state (product, license_id);
CREATE INDEX license_state_customer ON license_state (customer, license_id);
CREATE INDEX license_state_expiry ON license_state (expires_at, license_id);

-- Blue/green rebuilds: one row per model of each rebuild. A running one is
-- resumed when the projector starts, from its consumer's stored offsets.
CREATE TABLE projection_rebuilds (
    rebuild_id  uuid        NOT NULL,
    model       text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    events      bigint      NOT NULL DEFAULT 0,
    error       text,
    PRIMARY KEY (rebuild_id, model)
);

CREATE UNIQUE INDEX projection_rebuilds_one_running
    ON projection_rebuilds (model) WHERE status = 'running';

-- Public keys that signed dispute-bundle checkpoints, kept inline with the
-- SigningKey events.
CREATE TABLE signing_keys (
    kid          text        PRIMARY KEY,
    jwk          jsonb       NOT NULL,
    published_at timestamptz NOT NULL
);
