-- The validation index (src/index.rs) copies license_replica and the live
-- rows of activations into memory. Each changed row names its license on
-- `activation_index`, delivered at commit; `seats_version` (the
-- LicenseActivations version a row was last written at) orders what the
-- index reads against what a command of the same instance put there.
ALTER TABLE activations ADD COLUMN seats_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION activation_index_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('activation_index', NEW.license_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER activations_index_notify AFTER INSERT OR UPDATE ON activations
    FOR EACH ROW EXECUTE FUNCTION activation_index_notify();
CREATE TRIGGER license_replica_index_notify AFTER INSERT OR UPDATE ON license_replica
    FOR EACH ROW EXECUTE FUNCTION activation_index_notify();
