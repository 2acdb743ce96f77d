-- The Merkle tree of this event store and its signed heads (checkpoints),
-- RFC 6962 style. Leaf i is the i-th event in the relay's publication
-- order, (tx_id, global_position) below the xmin watermark; its input is
-- the event's chain hash, copied here when the leaf is appended: a witness
-- of the history as it was, that a later rewrite of `events` must also
-- rewrite, and cannot without contradicting the checkpoints already signed
-- and published.
CREATE TABLE merkle_leaves (
    leaf_index      bigint PRIMARY KEY CHECK (leaf_index >= 0),
    global_position bigint NOT NULL UNIQUE,
    tx_id           xid8   NOT NULL,
    event_hash      bytea  NOT NULL
);

-- Every tree head signed (a compact JWS, see schemas/files/CheckpointClaims.v1.json)
-- with the peaks of the tree it covers, so the next one extends it without
-- reading every leaf again.
CREATE TABLE checkpoints (
    tree_size     bigint      PRIMARY KEY CHECK (tree_size >= 0),
    root_hash     bytea       NOT NULL,
    last_position bigint,
    frontier      bytea       NOT NULL,
    signed_at     timestamptz NOT NULL,
    jws           text        NOT NULL
);

-- Which checkpoints reached <prefix>.checkpoints.
CREATE TABLE checkpoints_published (
    tree_size    bigint      PRIMARY KEY REFERENCES checkpoints (tree_size),
    published_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER merkle_leaves_immutable BEFORE UPDATE OR DELETE ON merkle_leaves
    FOR EACH ROW EXECUTE FUNCTION history_immutable();
CREATE TRIGGER merkle_leaves_no_truncate BEFORE TRUNCATE ON merkle_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION history_immutable();
CREATE TRIGGER checkpoints_immutable BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION history_immutable();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION history_immutable();
