-- Aggregate snapshots (issue 17): the state a command's transaction
-- stored, so that loading an aggregate reads it and the events after it
-- instead of its whole stream. Derived data, like the inline indexes: the
-- events stay the truth, the audit (projector, dispute bundles) never
-- reads a snapshot, and one taken by another fold version than the
-- running code's is ignored. `state` is json, not jsonb: written and read
-- whole, never queried into.
CREATE TABLE snapshots (
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    fold_version   integer NOT NULL,
    sequence       bigint  NOT NULL,
    state          json    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
