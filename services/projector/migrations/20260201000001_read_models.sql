-- Read models of the projector. Everything here can be rebuilt from the
-- event topics; nothing here is a source of truth.

-- One row per license, joining what every context says about it.
CREATE TABLE license_state (
    license_id    uuid        PRIMARY KEY,
    -- The folded view (see domain::license_view); columns below are copies
    -- of its fields kept for filtering.
    state         jsonb       NOT NULL,
    status        text        NOT NULL,
    product       text        NOT NULL,
    customer      text        NOT NULL,
    expires_at    timestamptz,
    -- Per-aggregate sequence of the last applied issuance event: a relay
    -- re-publication after a crash is recognised and skipped.
    last_sequence bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX license_state_status ON license_state (status, license_id);
CREATE INDEX license_state_product ON license_state (product, license_id);
CREATE INDEX license_state_customer ON license_state (customer, license_id);

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
    payload         jsonb       NOT NULL,
    prev_hash       text        NOT NULL,
    hash            text        NOT NULL,
    projected_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_trail_license ON audit_trail (license_id, event_id);
CREATE INDEX audit_trail_actor ON audit_trail (actor_id, event_id);
CREATE INDEX audit_trail_type ON audit_trail (event_type, event_id);
CREATE INDEX audit_trail_correlation ON audit_trail (correlation_id);
