-- es_append writes its tables itself, not with statements: it moves the
-- stream's row in es_streams on (src/stream_row.c) and inserts the events
-- into es_events (src/event_rows.c) through the table access method.  What
-- the UPDATE and the INSERT would do must still happen: index entries for a
-- row version that is not a HOT update, the versions seen by later
-- statements of the transaction, the inline projections' dispatch (only
-- when its trigger would fire), and the statements themselves wherever the
-- tables have other triggers or a transaction sees one snapshot throughout.

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

-- Inline projections get every event once, whether es_append inserts it
-- itself or with the INSERT statement (another INSERT trigger on
-- es_events); a disabled dispatch trigger dispatches nothing.
CREATE TABLE row_seen (global_position bigint, event_type text, how text);
CREATE FUNCTION row_seen_handler(e es_event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO row_seen VALUES (e.global_position, e.event_type, current_setting('row.how', true)) $$;
SELECT es_register_projection('row_seen', 'row_seen_handler(es_event)', ARRAY['Seen']);
SET row.how = 'direct';
SELECT es_append('row-4', NULL, 'Seen', '{}');
SELECT es_append('row-4', NULL, '[{"type": "Seen", "data": {}}, {"type": "Unseen", "data": {}}, {"type": "Seen", "data": {}}]');
CREATE TABLE row_inserted (global_position bigint);
CREATE FUNCTION row_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO row_inserted VALUES (NEW.global_position);
    RETURN NULL;
END $$;
CREATE TRIGGER row_inserted AFTER INSERT ON es_events
    FOR EACH ROW EXECUTE FUNCTION row_inserted();
SET row.how = 'statement';
SELECT es_append('row-4', NULL, 'Seen', '{}');
SELECT es_append('row-4', NULL, '[{"type": "Seen", "data": {}}, {"type": "Unseen", "data": {}}]');
DROP TRIGGER row_inserted ON es_events;
ALTER TABLE es_events DISABLE TRIGGER es_projection_dispatch;
SET row.how = 'disabled';
SELECT es_append('row-4', NULL, 'Seen', '{}');
ALTER TABLE es_events ENABLE ALWAYS TRIGGER es_projection_dispatch;
-- ENABLE ALWAYS: it fires with session_replication_role = replica too
SET session_replication_role = replica;
SET row.how = 'replica role';
SELECT es_append('row-4', NULL, 'Seen', '{}');
RESET session_replication_role;
SELECT e.version, e.event_type, s.how
FROM es_events e LEFT JOIN row_seen s USING (global_position)
WHERE e.stream_id = 'row-4' ORDER BY e.version;
SELECT count(*) AS fired_user_trigger FROM row_inserted;
SELECT es_unregister_projection('row_seen');
DROP TABLE row_seen, row_inserted;
DROP FUNCTION row_seen_handler(es_event);
DROP FUNCTION row_inserted();
RESET row.how;
DROP EXTENSION amcheck;
