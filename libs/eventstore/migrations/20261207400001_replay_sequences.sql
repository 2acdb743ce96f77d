-- A replay's (a rebuild's) sequence guard: the last sequence of every
-- aggregate a chunk touched, one row per chunk, in the chunk's transaction.
-- Per-aggregate rows of `consumer_sequences` cost a keyed upsert each, which
-- was a third of a rebuild's database time; a replay keeps its guard in
-- memory and reads these rows back only when it restarts or hands over.
CREATE TABLE IF NOT EXISTS replay_sequences (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer  text   NOT NULL,
    -- {"<topic>": {"<aggregate type>": {"<aggregate id>": <last sequence>}}}
    sequences jsonb  NOT NULL
);
CREATE INDEX IF NOT EXISTS replay_sequences_consumer ON replay_sequences (consumer);
