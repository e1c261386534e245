-- Helpers for the regression tests that follow (they run in order, in one
-- database).  es_test.sqlstate_of runs a statement and returns
-- "SQLSTATE: message | detail" of its error, or 'no error', so that a test
-- can show the SQLSTATE of every error path in one table.
CREATE SCHEMA es_test;
GRANT USAGE ON SCHEMA es_test TO PUBLIC;
CREATE FUNCTION es_test.sqlstate_of(statement text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || CASE WHEN detail <> '' THEN ' | ' || detail ELSE '' END;
END
$$;
SELECT es_test.sqlstate_of('SELECT 1');
SELECT es_test.sqlstate_of('SELECT 1/0');
