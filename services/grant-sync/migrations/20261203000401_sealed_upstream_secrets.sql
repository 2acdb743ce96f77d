-- Upstream secrets are stored sealed: AES-256-GCM under the key of
-- upstream_secret_key_file, a random nonce per secret, the upstream id as
-- associated data. A migration has no key, so a secret stored before this
-- stays in plaintext_secret until the service's next start-up seals it.
ALTER TABLE upstream_credentials RENAME COLUMN secret TO plaintext_secret;
ALTER TABLE upstream_credentials
    ALTER COLUMN plaintext_secret DROP NOT NULL,
    ADD COLUMN nonce      bytea,
    ADD COLUMN ciphertext bytea,
    ADD CONSTRAINT upstream_credentials_one_form CHECK (
        (plaintext_secret IS NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
        OR (plaintext_secret IS NOT NULL AND nonce IS NULL AND ciphertext IS NULL));
