-- Events and command outcomes are facts: nobody changes or removes one.
-- Service roles lack the privileges anyway (eventstore::db::grant_serving);
-- this refuses it to the owner and to superusers too, unless a session
-- names the maintenance path explicitly:
--   SET licensing.maintenance = 'rewrite-history';
-- (a superuser can still disable the trigger: the hash chain and the
-- signed checkpoints are what make any rewrite visible).
CREATE FUNCTION history_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('licensing.maintenance', true) IS DISTINCT FROM 'rewrite-history' THEN
        RAISE EXCEPTION '% of % refused: history is append-only', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'maintenance only: SET licensing.maintenance = ''rewrite-history''';
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION history_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION history_immutable();
CREATE TRIGGER command_outcomes_immutable BEFORE UPDATE OR DELETE ON command_outcomes
    FOR EACH ROW EXECUTE FUNCTION history_immutable();
CREATE TRIGGER command_outcomes_no_truncate BEFORE TRUNCATE ON command_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION history_immutable();
