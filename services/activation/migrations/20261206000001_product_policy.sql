-- The product's default policy beside its features: a trial's license is
-- issued under it, so its device rules (fingerprint_min_matches,
-- require_client_time) decide trials. NULL for products replicated
-- before; they read as the default policy.
ALTER TABLE product_replica ADD COLUMN policy jsonb;
