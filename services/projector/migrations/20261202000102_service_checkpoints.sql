-- Each event's leaf index in its service's Merkle tree (the relay's
-- leaf_index header): what inclusion proofs are computed from.
ALTER TABLE audit_trail ADD COLUMN IF NOT EXISTS leaf_index bigint;
CREATE INDEX IF NOT EXISTS audit_trail_leaf ON audit_trail (context, leaf_index) INCLUDE (hash);

-- Every service checkpoint read from <prefix>.checkpoints, as received: its
-- signature is checked when it is used or served, against the keys the
-- service published on its own events topic. Two heads of one size with
-- different roots are both kept: that is evidence.
CREATE TABLE service_checkpoints (
    context       text        NOT NULL,
    tree_size     bigint      NOT NULL,
    root_hash     text        NOT NULL,
    last_position bigint,
    signed_at     timestamptz NOT NULL,
    kid           text,
    jws           text        NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (context, tree_size, root_hash)
);
