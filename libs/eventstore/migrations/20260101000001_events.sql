-- The event store, which is also the outbox the relay publishes from.
-- Column names follow postgres-es (aggregate_type, aggregate_id, sequence,
-- event_type, event_version, payload, metadata); the rest is filled by
-- defaults and the hash-chain trigger, so writers name only those seven.

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version and variant bits, random
-- rest. PostgreSQL 15 has no built-in; event ids must sort by creation time.
CREATE FUNCTION uuid_generate_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    event_id        uuid        NOT NULL DEFAULT uuid_generate_v7(),
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    -- json, not jsonb: the stored text is kept byte for byte, which is what
    -- the hash covers and what a verifier outside the database re-hashes.
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction: the relay publishes only rows of transactions
    -- below the snapshot's xmin, so a late commit is never skipped.
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    UNIQUE (event_id),
    UNIQUE (global_position)
);

CREATE INDEX events_outbox_order ON events (tx_id, global_position);

-- hash = SHA-256(prev_hash || canonical bytes), prev_hash being the hash of the
-- same aggregate's previous event (32 zero bytes for the first). The canonical
-- bytes are the fields below joined by '\n'; eventstore::chain reproduces them.
CREATE FUNCTION events_hash_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    IF NEW.sequence = 1 THEN
        prev := decode(repeat('00', 32), 'hex');
    ELSE
        SELECT e.hash INTO prev FROM events e
         WHERE e.aggregate_type = NEW.aggregate_type
           AND e.aggregate_id = NEW.aggregate_id
           AND e.sequence = NEW.sequence - 1;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'event %/% #% has no predecessor',
                NEW.aggregate_type, NEW.aggregate_id, NEW.sequence;
        END IF;
    END IF;
    NEW.prev_hash := prev;
    NEW.hash := sha256(prev || convert_to(concat_ws(E'\n',
        NEW.event_id::text,
        NEW.aggregate_type,
        NEW.aggregate_id,
        NEW.sequence::text,
        NEW.event_type,
        NEW.event_version,
        (extract(epoch FROM NEW.recorded_at) * 1000000)::bigint::text,
        NEW.payload::text,
        NEW.metadata::text), 'UTF8'));
    RETURN NEW;
END
$$;

CREATE TRIGGER events_hash_chain BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_hash_chain();

-- Events are facts: the application role never needs to change or remove one.
-- (A superuser can still do it; the hash chain is what makes that visible.)

-- One row per command ever handled: the idempotency record. Written in the
-- same transaction as the command's events, so a duplicate can never append.
CREATE TABLE command_outcomes (
    command_id     uuid        PRIMARY KEY,
    command_type   text        NOT NULL,
    request_digest text        NOT NULL,
    aggregate_id   text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('accepted', 'rejected')),
    error_code     text,
    error_message  text,
    error_field    text,
    sequence       bigint,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Where each relay has published up to, written after the broker acknowledged.
CREATE TABLE relay_checkpoints (
    relay           text        PRIMARY KEY,
    tx_id           xid8        NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Kafka offsets of transactional consumers, committed in the same
-- transaction as the consumer's effect (exactly-once effect).
CREATE TABLE consumer_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
