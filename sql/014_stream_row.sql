-- The stream's row in es_streams is moved on by es_append itself, not by an
-- UPDATE statement (src/stream_row.c).  What an UPDATE would do must still
-- happen: index entries for a row version that is not a HOT update, the
-- versions seen by later statements of the transaction, and the statement
-- itself wherever es_streams has UPDATE triggers or a transaction sees one
-- snapshot throughout.

CREATE EXTENSION amcheck;

-- 2,000 appends to one stream in one transaction fill the row's page, so
-- most of its new versions cannot be HOT updates and need index entries.
BEGIN;
SELECT count(es_append('row-1', NULL, 'Deposited', '{}')) FROM generate_series(1, 2000);
SELECT pg_stat_get_xact_tuples_updated('es_streams'::regclass) >
       pg_stat_get_xact_tuples_hot_updated('es_streams'::regclass) AS some_not_hot;
SELECT es_stream_version('row-1');
SELECT es_append('row-1', 2000, 'Withdrawn', '{}');
COMMIT;
-- every row version has its index entries, and the index finds the row
SELECT bt_index_check('es_streams_pkey', true);
SET enable_seqscan = off;
SELECT stream_id, version FROM es_streams WHERE stream_id = 'row-1';
RESET enable_seqscan;
SELECT count(*), max(version) FROM es_events WHERE stream_id = 'row-1';

-- Expected versions: exactly n, -1 (must exist), any
SELECT es_append('row-2', 0, 'Opened', '{}');
SELECT es_append('row-2', 1, 'Deposited', '{}');
SELECT es_append('row-2', -1, 'Deposited', '{}');
SELECT es_append('row-2', NULL, 'Deposited', '{}');
SELECT es_test.sqlstate_of($$ SELECT es_append('row-2', 3, 'Deposited', '{}') $$);
SELECT es_test.sqlstate_of($$ SELECT es_append('row-3', -1, 'Deposited', '{}') $$);
SELECT es_test.sqlstate_of($$ SELECT es_append('row-3', 5, 'Deposited', '{}') $$);
SELECT stream_id, version FROM es_streams WHERE stream_id LIKE 'row-%' ORDER BY stream_id;

-- A later statement of the same transaction sees the new version, and a
-- rollback to a savepoint takes it back.
BEGIN;
SELECT es_append('row-2', 4, 'Deposited', '{}');
SELECT version, updated_at = now() AS updated_now, created_at < now() AS created_before
FROM es_streams WHERE stream_id = 'row-2';
SAVEPOINT s;
SELECT es_append('row-2', 5, 'Deposited', '{}');
ROLLBACK TO SAVEPOINT s;
SELECT es_stream_version('row-2');
SELECT es_append('row-2', 5, 'Withdrawn', '{}');
COMMIT;
SELECT version, event_type FROM es_events WHERE stream_id = 'row-2' ORDER BY version;

-- With an UPDATE trigger on es_streams, es_append moves the row with the
-- UPDATE statement, so the trigger fires.
CREATE TABLE row_log (stream_id text, old_version bigint, new_version bigint);
CREATE FUNCTION row_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO row_log VALUES (NEW.stream_id, OLD.version, NEW.version);
    RETURN NEW;
END $$;
CREATE TRIGGER row_logged BEFORE UPDATE ON es_streams
    FOR EACH ROW EXECUTE FUNCTION row_logged();
SELECT es_append('row-2', 6, 'Deposited', '{}');
SELECT es_append('row-2', NULL, 'Deposited', '{}');
SELECT es_test.sqlstate_of($$ SELECT es_append('row-2', 6, 'Deposited', '{}') $$);
SELECT * FROM row_log ORDER BY new_version;
DROP TRIGGER row_logged ON es_streams;
SELECT es_append('row-2', NULL, 'Deposited', '{}');
SELECT count(*) AS logged FROM row_log;

-- In REPEATABLE READ the statement runs too: a row moved on by a transaction
-- that committed after our snapshot is a serialization failure (40001), as
-- for any UPDATE (the isolation spec isolation_levels has the concurrent
-- case); on its own, the transaction appends as usual.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT es_append('row-2', 9, 'Deposited', '{}');
SELECT es_append('row-2', NULL, 'Deposited', '{}');
COMMIT;
SELECT es_stream_version('row-2');

DROP TABLE row_log;
DROP FUNCTION row_logged();
DROP EXTENSION amcheck;
