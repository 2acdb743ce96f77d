-- Webhooks: the endpoints this service delivers to (an API key's or a
-- license client's callback URL, kept by the service that owns it from its
-- own events) and one row per event to deliver to one endpoint, written by
-- the consumer that read the event in its offset's transaction. The id of
-- a delivery is derived from (endpoint, event id), so an event read twice
-- is one delivery, and a receiver de-duplicates by it.
CREATE TABLE webhook_endpoints (
    endpoint             text        PRIMARY KEY,
    url                  text        NOT NULL,
    events               text[]      NOT NULL,
    disabled             boolean     NOT NULL DEFAULT false,
    -- Events recorded before the endpoint was first set are not its.
    since                timestamptz NOT NULL DEFAULT now(),
    -- The failed attempts in a row and when the row began: what disables it.
    consecutive_failures integer     NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    endpoint        text        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    -- The body sent, byte for byte what is signed.
    body            bytea       NOT NULL,
    -- pending (to send, or being sent: claimed until next_attempt_at;
    -- parked at 'infinity' while its endpoint is disabled),
    -- delivered, failed (retries exhausted; redeliverable).
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    delivered_at    timestamptz
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of_endpoint ON webhook_deliveries (endpoint, created_at DESC);
