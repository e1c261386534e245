-- Every error path of es_append and the reads, with its SQLSTATE, and proof
-- that a failed call writes nothing.


SELECT es_append('err-1', 0, 'Created', '{}', NULL, '50000000-0000-4000-8000-0000000000aa');
SELECT count(*) AS events_before FROM es_events;

SELECT case_name, es_test.sqlstate_of(statement) AS result FROM (VALUES
    -- 22004: NULL where a value is required
    ('null stream id',           $$SELECT es_append(NULL, 0, 'T', '{}')$$),
    ('null event type',          $$SELECT es_append('err-2', 0, NULL, '{}')$$),
    ('null data',                $$SELECT es_append('err-2', 0, 'T', NULL)$$),
    ('null batch stream id',     $$SELECT es_append(NULL, 0, '[{"type": "T", "data": {}}]'::jsonb)$$),
    ('null batch',               $$SELECT es_append('err-2', 0, NULL::jsonb)$$),
    ('read null stream id',      $$SELECT * FROM es_read(NULL)$$),
    ('read null from_version',   $$SELECT * FROM es_read('err-1', NULL)$$),
    ('backward null stream id',  $$SELECT * FROM es_read_backward(NULL)$$),
    ('version of null stream',   $$SELECT es_stream_version(NULL)$$),
    -- 22023: invalid argument
    ('empty stream id',          $$SELECT es_append('', 0, 'T', '{}')$$),
    ('empty event type',         $$SELECT es_append('err-2', 0, '', '{}')$$),
    ('expected version -2',      $$SELECT es_append('err-2', -2, 'T', '{}')$$),
    ('batch expected -5',        $$SELECT es_append('err-2', -5, '[{"type": "T", "data": {}}]'::jsonb)$$),
    ('data is an array',         $$SELECT es_append('err-2', 0, 'T', '[]')$$),
    ('data is a string',         $$SELECT es_append('err-2', 0, 'T', '"x"')$$),
    ('data is a number',         $$SELECT es_append('err-2', 0, 'T', '1')$$),
    ('data is JSON null',        $$SELECT es_append('err-2', 0, 'T', 'null')$$),
    ('metadata is an array',     $$SELECT es_append('err-2', 0, 'T', '{}', '[]')$$),
    ('metadata is JSON null',    $$SELECT es_append('err-2', 0, 'T', '{}', 'null')$$),
    ('batch is an object',       $$SELECT es_append('err-2', 0, '{}'::jsonb)$$),
    ('batch is a scalar',        $$SELECT es_append('err-2', 0, '3'::jsonb)$$),
    ('batch is empty',           $$SELECT es_append('err-2', 0, '[]'::jsonb)$$),
    ('batch element not object', $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}}, [1]]'::jsonb)$$),
    ('batch element no type',    $$SELECT es_append('err-2', 0, '[{"data": {}}]'::jsonb)$$),
    ('batch element no data',    $$SELECT es_append('err-2', 0, '[{"type": "T"}]'::jsonb)$$),
    ('batch element bad data',   $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}}, {"type": "T", "data": null}]'::jsonb)$$),
    ('batch element bad type',   $$SELECT es_append('err-2', 0, '[{"type": ["T"], "data": {}}]'::jsonb)$$),
    ('batch element empty type', $$SELECT es_append('err-2', 0, '[{"type": "", "data": {}}]'::jsonb)$$),
    ('batch element bad meta',   $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "metadata": 1}]'::jsonb)$$),
    ('batch element bad id',     $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "id": "0000"}]'::jsonb)$$),
    ('batch element long id',    $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "id": "00000000-0000-4000-8000-0000000000001"}]'::jsonb)$$),
    ('batch element bad schema', $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "schema_version": 1.5}]'::jsonb)$$),
    ('batch element big schema', $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "schema_version": 99999999999}]'::jsonb)$$),
    ('batch element extra key',  $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "payload": {}}]'::jsonb)$$),
    ('read from version 0',      $$SELECT * FROM es_read('err-1', 0)$$),
    ('read negative max_count',  $$SELECT * FROM es_read('err-1', 1, -1)$$),
    ('backward from version 0',  $$SELECT * FROM es_read_backward('err-1', 0)$$),
    ('backward negative count',  $$SELECT * FROM es_read_backward('err-1', NULL, -1)$$),
    -- SE409: wrong expected version
    ('stream exists already',    $$SELECT es_append('err-1', 0, 'T', '{}')$$),
    ('stale expected version',   $$SELECT es_append('err-1', 5, 'T', '{}')$$),
    ('stream must exist',        $$SELECT es_append('err-2', -1, 'T', '{}')$$),
    ('batch stale version',      $$SELECT es_append('err-1', 0, '[{"type": "T", "data": {}}]'::jsonb)$$),
    -- 23505: event id reused outside an idempotent retry
    ('id reused',                $$SELECT es_append('err-2', 0, 'T', '{}', NULL, '50000000-0000-4000-8000-0000000000aa')$$),
    ('id twice in a batch',      $$SELECT es_append('err-2', 0, '[{"type": "T", "data": {}, "id": "50000000-0000-4000-8000-000000000001"}, {"type": "T", "data": {}, "id": "50000000-0000-4000-8000-000000000001"}]'::jsonb)$$),
    -- SE405: stored events are immutable
    ('update an event',          $$UPDATE es_events SET event_type = 'X'$$),
    ('delete an event',          $$DELETE FROM es_events$$),
    ('truncate events',          $$TRUNCATE es_events$$),
    ('delete a stream',          $$DELETE FROM es_streams$$),
    -- 25006: appends in a read-only transaction (PostgreSQL's own check)
    ('append read-only',         $$SELECT es_append('err-2', 0, 'T', '{}') FROM (SELECT set_config('transaction_read_only', 'on', true)) s$$)
) AS cases(case_name, statement);

-- 54000: an event larger than es.max_event_size (data plus metadata)
SET es.max_event_size = 100;
SHOW es.max_event_size;
SELECT es_test.sqlstate_of($$SELECT es_append('err-2', 0, 'T', jsonb_build_object('pad', repeat('x', 100)))$$);
SELECT es_test.sqlstate_of($$SELECT es_append('err-2', 0, 'T', '{}', jsonb_build_object('pad', repeat('x', 100)))$$);
SELECT es_test.sqlstate_of($$SELECT es_append('err-2', 0, jsonb_build_array(
    jsonb_build_object('type', 'T', 'data', '{}'::jsonb),
    jsonb_build_object('type', 'T', 'data', jsonb_build_object('pad', repeat('x', 100)))))$$);
-- just under the limit is fine
SELECT es_append('err-3', 0, 'T', jsonb_build_object('pad', repeat('x', 50)));
RESET es.max_event_size;
-- only superusers may raise the limit
CREATE ROLE es_test_user;
SET ROLE es_test_user;
SELECT es_test.sqlstate_of($$SET es.max_event_size = '1GB'$$);
RESET ROLE;
DROP ROLE es_test_user;

-- Nothing above wrote anything but err-3
SELECT count(*) AS events_after FROM es_events;
SELECT stream_id, version FROM es_streams ORDER BY stream_id COLLATE "C";
