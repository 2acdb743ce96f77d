-- The signing keys each service published, read with every checkpoint a
-- service sends and every few seconds by the verifier: a partial index of
-- a handful of rows. Without it a plan prepared while the trail was small
-- scanned all of it (51 ms a read at 1,000,000 rows).
CREATE INDEX IF NOT EXISTS audit_trail_keys ON audit_trail (context)
    WHERE event_type = 'SigningKeyPublished';
