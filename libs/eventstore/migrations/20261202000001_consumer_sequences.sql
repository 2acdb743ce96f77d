-- The last sequence of each aggregate an event consumer applied, per
-- topic (two contexts may hold streams of the same name), written in the
-- same transaction as its effect and offsets: an event that is not the
-- next one of its aggregate (a gap or a jump) is dead-lettered.
CREATE TABLE IF NOT EXISTS consumer_sequences (
    consumer       text   NOT NULL,
    topic          text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    last_sequence  bigint NOT NULL,
    PRIMARY KEY (consumer, topic, aggregate_type, aggregate_id)
);
