-- A snapshot names the hash of the event it was taken at; loading uses it
-- only while that event is still the stream's (a restored or rewritten
-- history makes it stale, and it is ignored). Snapshots are derived data:
-- the ones taken before this column existed are simply dropped.
DELETE FROM snapshots;
ALTER TABLE snapshots ADD COLUMN event_hash bytea NOT NULL;
