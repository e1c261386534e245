-- Privileges: reading needs SELECT; appending needs EXECUTE on es_append
-- (not PUBLIC's) and nothing else; nobody but the owner writes es's tables
-- directly, whatever it is granted; registration is not PUBLIC's.
CREATE ROLE es_reader;
CREATE ROLE es_writer;
CREATE ROLE es_nobody;
GRANT SELECT ON es_events, es_streams TO es_reader;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid),
                          es_append(text, bigint, jsonb) TO es_writer;

-- A writer with nothing but EXECUTE on es_append: every form works.
SET ROLE es_writer;
SELECT es_append('priv-1', 0, 'A', '{}');
SELECT es_append('priv-1', 1, 'B', '{}', NULL, '70000000-0000-4000-8000-000000000001');
SELECT es_append('priv-1', 1, 'B', '{}', NULL, '70000000-0000-4000-8000-000000000001') AS retry;
SELECT es_append('priv-1', NULL, '[{"type": "C", "data": {}}, {"type": "D", "data": {}}]');
SELECT es_append('priv-1', -1, 'E', '{}');
SELECT es_test.sqlstate_of($$SELECT es_append('priv-1', 1, 'X', '{}')$$) AS conflict;
-- ... but cannot read (no SELECT), nor write the tables directly.
SELECT es_test.sqlstate_of($$SELECT count(*) FROM es_read('priv-1')$$) AS read;
SELECT es_test.sqlstate_of($$INSERT INTO es_events VALUES (1000000, 'priv-1', 7, gen_random_uuid(), 'Forged', 1, '{}', NULL, now())$$) AS insert_events;
SELECT es_test.sqlstate_of($$UPDATE es_streams SET version = 99$$) AS update_streams;
SELECT es_test.sqlstate_of($$DELETE FROM es_events$$) AS delete_events;
SELECT es_test.sqlstate_of($$TRUNCATE es_streams$$) AS truncate_streams;
SELECT es_test.sqlstate_of($$SELECT nextval('es_events_global_position_seq')$$) AS sequence;
RESET ROLE;

-- Even granted every privilege on the tables, another role cannot forge
-- events or versions (42501 from row-level security), nor change or delete
-- stored events (SE405 from the immutability triggers).
GRANT ALL ON es_events, es_streams TO es_writer;
SET ROLE es_writer;
SELECT es_test.sqlstate_of($$INSERT INTO es_events VALUES (1000000, 'priv-1', 7, gen_random_uuid(), 'Forged', 1, '{}', NULL, now())$$) AS insert_events;
SELECT es_test.sqlstate_of($$INSERT INTO es_streams VALUES ('priv-9', 5)$$) AS insert_streams;
SELECT es_test.sqlstate_of($$UPDATE es_streams SET version = 99 WHERE stream_id = 'priv-1'$$) AS update_streams;
SELECT es_test.sqlstate_of($$UPDATE es_events SET data = '{}'$$) AS update_events;
SELECT es_test.sqlstate_of($$DELETE FROM es_events$$) AS delete_events;
SELECT es_test.sqlstate_of($$DELETE FROM es_streams$$) AS delete_streams;
SELECT es_test.sqlstate_of($$TRUNCATE es_events$$) AS truncate_events;
SELECT es_test.sqlstate_of($$TRUNCATE es_streams$$) AS truncate_streams;
RESET ROLE;
REVOKE ALL ON es_events, es_streams FROM es_writer;

-- What PUBLIC may execute: reads and helpers, never an append, a write or a
-- registration.
SELECT p.oid::regprocedure AS public_may_execute
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'es'
WHERE has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;
SELECT p.oid::regprocedure AS not_public
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'es'
WHERE NOT has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;

-- A reader reads, and cannot append.
SET ROLE es_reader;
SELECT version, event_type FROM es_read_backward('priv-1', NULL, 2);
SELECT es_stream_version('priv-1');
SELECT es_test.sqlstate_of($$SELECT es_append('priv-1', 5, 'F', '{}')$$) AS append;
SELECT es_test.sqlstate_of($$SELECT es_append('priv-1', 5, '[{"type": "F", "data": {}}]')$$) AS append_batch;
SELECT es_test.sqlstate_of($$SELECT es_register_upcaster('A', 1, 'pg_catalog.jsonb_strip_nulls(jsonb)')$$) AS register;
SELECT es_test.sqlstate_of($$SELECT es_unregister_upcaster('A', 1)$$) AS unregister;
RESET ROLE;

-- A role with nothing can do neither.
SET ROLE es_nobody;
SELECT es_test.sqlstate_of($$SELECT es_append('priv-2', 0, 'A', '{}')$$) AS append;
SELECT es_test.sqlstate_of($$SELECT count(*) FROM es_read('priv-1')$$) AS read;
SELECT es_test.sqlstate_of($$SELECT es_stream_version('priv-1')$$) AS stream_version;
-- es_category touches no table
SELECT es_category('priv-1');
RESET ROLE;

-- Nothing above wrote anything but the writer's appends.
SELECT stream_id, version FROM es_streams WHERE stream_id LIKE 'priv-%';
SELECT version, event_type FROM es_read('priv-1');

REVOKE ALL ON es_events, es_streams FROM es_reader;
REVOKE EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid),
                           es_append(text, bigint, jsonb) FROM es_writer;
DROP ROLE es_reader;
DROP ROLE es_writer;
DROP ROLE es_nobody;
