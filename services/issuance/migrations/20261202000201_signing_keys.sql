-- This service signs its checkpoints: the keys it published
-- (service_kit::keys), read for its JWKS.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid          text        PRIMARY KEY,
    jwk          jsonb       NOT NULL,
    published_at timestamptz NOT NULL
);
