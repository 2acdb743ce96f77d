-- As-of answers fold a license's events from the nearest earlier snapshot
-- of its state instead of from its first event (app/state.rs). A snapshot
-- covers every audit row of the license recorded at or before `upto`, and
-- says how many there were: it is used only while the audit trail still
-- holds exactly that many, so an event that arrives late (recorded before
-- `upto`, projected after the snapshot was taken) invalidates it. Audit
-- rows are never deleted, so an equal count is an equal set.
CREATE TABLE license_state_snapshots (
    license_id     uuid        NOT NULL,
    upto           timestamptz NOT NULL,
    -- domain::FOLD_VERSION of the fold that made it; others are not used.
    fold           integer     NOT NULL,
    events_covered bigint      NOT NULL,
    -- json, not jsonb: written and read whole, never queried into.
    state          json        NOT NULL,
    PRIMARY KEY (license_id, upto)
);

-- The count above, and the events after a snapshot, by time.
CREATE INDEX audit_trail_license_time ON audit_trail (license_id, recorded_at);
