-- The Kafka topic a command came through (contracts::Actor::via), beside
-- the actor its envelope claimed; NULL for HTTP callers.
ALTER TABLE audit_trail ADD COLUMN IF NOT EXISTS actor_via text;
