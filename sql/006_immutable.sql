-- Stored events are immutable: UPDATE, DELETE and TRUNCATE fail with SE405
-- for everyone, the table owner and superusers included, and also under
-- session_replication_role = replica.
\set VERBOSITY default

SELECT es_append('imm-1', 0, 'Created', '{"v": 1}');

UPDATE es_events SET data = '{"v": 2}' WHERE stream_id = 'imm-1';
DELETE FROM es_events WHERE stream_id = 'imm-1';
TRUNCATE es_events;
-- Statement-level: even a statement that would touch no row is refused
DELETE FROM es_events WHERE false;
-- Also through a CTE
WITH d AS (DELETE FROM es_events RETURNING 1) SELECT count(*) FROM d;

-- The current user owns the table and is a superuser
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;
SELECT pg_get_userbyid(relowner) = current_user AS is_owner FROM pg_class WHERE oid = 'es_events'::regclass;

-- Replication mode does not switch the triggers off
SET session_replication_role = replica;
UPDATE es_events SET data = '{"v": 2}';
DELETE FROM es_events;
TRUNCATE es_events;
RESET session_replication_role;

-- Another superuser fares no better
CREATE ROLE es_test_admin SUPERUSER;
SET ROLE es_test_admin;
DELETE FROM es_events;
RESET ROLE;
DROP ROLE es_test_admin;

-- The SQLSTATE, for clients that branch on it
DO $$
BEGIN
    DELETE FROM es_events;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END
$$;

-- The event is untouched; appending still works
SELECT version, data FROM es_read('imm-1');
SELECT es_append('imm-1', 1, 'Changed', '{"v": 2}');

-- es_streams is derived from es_events: its rows cannot be deleted either
DELETE FROM es_streams WHERE stream_id = 'imm-1';
TRUNCATE es_streams;
SELECT stream_id, version FROM es_streams WHERE stream_id = 'imm-1';
