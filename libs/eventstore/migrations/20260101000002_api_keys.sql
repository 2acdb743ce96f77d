-- Every service's replica of the API keys issuance manages, built from
-- <prefix>.issuance.events; what the auth middleware checks requests against.
-- Only the SecretKey's SHA-256 digest is kept, never the secret.
CREATE TABLE api_keys (
    key_id        text        PRIMARY KEY,
    secret_digest text        NOT NULL,
    scopes        text[]      NOT NULL,
    allowlist     text[]      NOT NULL,
    revoked       boolean     NOT NULL DEFAULT false,
    last_sequence bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
