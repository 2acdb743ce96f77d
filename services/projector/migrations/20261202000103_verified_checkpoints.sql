-- Only a checkpoint whose signature verifies under the keys its context's
-- service published on its own events topic is used (verified); one whose
-- key the projector has not seen yet waits (verified IS NULL) and is checked
-- again once the key arrives; one that fails under a known key is never
-- stored. Every distinct signed document is a row of its own, so a copy
-- cannot pre-empt the genuine one; two genuine heads of one size with
-- different roots are evidence, and both are kept. Rows filed before this
-- are checked again (NULL).
ALTER TABLE service_checkpoints ADD COLUMN jws_digest text;
UPDATE service_checkpoints SET jws_digest = encode(sha256(convert_to(jws, 'UTF8')), 'hex');
ALTER TABLE service_checkpoints ALTER COLUMN jws_digest SET NOT NULL;
ALTER TABLE service_checkpoints ADD COLUMN verified boolean;
ALTER TABLE service_checkpoints DROP CONSTRAINT service_checkpoints_pkey;
ALTER TABLE service_checkpoints ADD PRIMARY KEY (context, tree_size, root_hash, jws_digest);
CREATE INDEX service_checkpoints_pending ON service_checkpoints (received_at) WHERE verified IS NULL;
