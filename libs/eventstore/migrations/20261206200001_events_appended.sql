-- The relay wakes when events commit instead of polling for them: one
-- NOTIFY per appending statement, delivered by PostgreSQL at commit (and
-- never for a rolled-back transaction). Identical notifications of one
-- transaction fold into one.
CREATE FUNCTION events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events_appended', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_appended
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_appended();
