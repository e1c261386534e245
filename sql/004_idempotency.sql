-- Idempotent retries: an append whose every event id is already stored in
-- that stream, right after the expected version, writes nothing and returns
-- what the first call returned.

SELECT es_append('pay-1', 0, 'Started', '{}', NULL, '10000000-0000-4000-8000-000000000001');
SELECT es_append('pay-1', 0, 'Started', '{}', NULL, '10000000-0000-4000-8000-000000000001') AS retry;
SELECT es_append('pay-1', 1, 'Charged', '{"amount": 5}', NULL, '10000000-0000-4000-8000-000000000002');
-- The stream moved on; the retry of the first append still gets its answer
SELECT es_append('pay-1', 0, 'Started', '{}', NULL, '10000000-0000-4000-8000-000000000001') AS late_retry;
SELECT es_append('pay-1', 1, 'Charged', '{"amount": 5}', NULL, '10000000-0000-4000-8000-000000000002') AS retry;
-- With NULL and -1 the id alone identifies the retry
SELECT es_append('pay-1', NULL, 'Charged', '{"amount": 5}', NULL, '10000000-0000-4000-8000-000000000002') AS retry_any;
SELECT es_append('pay-1', -1, 'Charged', '{"amount": 5}', NULL, '10000000-0000-4000-8000-000000000002') AS retry_existing;
SELECT version, event_type, event_id FROM es_read('pay-1');

-- Batches: the whole batch must match, in order
SELECT es_append('pay-2', 0, '[
    {"type": "A", "data": {}, "id": "20000000-0000-4000-8000-000000000001"},
    {"type": "B", "data": {}, "id": "20000000-0000-4000-8000-000000000002"}]');
SELECT es_append('pay-2', 0, '[
    {"type": "A", "data": {}, "id": "20000000-0000-4000-8000-000000000001"},
    {"type": "B", "data": {}, "id": "20000000-0000-4000-8000-000000000002"}]') AS retry;
SELECT es_stream_version('pay-2');

-- Any other reuse of a stored id is 23505, with a message that says where the id is
\set VERBOSITY default
-- the same id at another expected version
SELECT es_append('pay-1', 2, 'Charged', '{}', NULL, '10000000-0000-4000-8000-000000000002');
-- in another stream
SELECT es_append('pay-3', 0, 'Charged', '{}', NULL, '10000000-0000-4000-8000-000000000002');
-- a batch whose ids are stored in another order
SELECT es_append('pay-2', 0, '[
    {"type": "B", "data": {}, "id": "20000000-0000-4000-8000-000000000002"},
    {"type": "A", "data": {}, "id": "20000000-0000-4000-8000-000000000001"}]');
-- a batch that repeats only part of an earlier one
SELECT es_append('pay-2', 0, '[
    {"type": "A", "data": {}, "id": "20000000-0000-4000-8000-000000000001"},
    {"type": "C", "data": {}, "id": "20000000-0000-4000-8000-000000000003"}]');
-- a batch that adds one stored id to new events
SELECT es_append('pay-2', 2, '[
    {"type": "C", "data": {}, "id": "20000000-0000-4000-8000-000000000003"},
    {"type": "A", "data": {}, "id": "20000000-0000-4000-8000-000000000001"}]');
-- the same id twice in one batch
SELECT es_append('pay-4', 0, '[
    {"type": "A", "data": {}, "id": "40000000-0000-4000-8000-000000000001"},
    {"type": "B", "data": {}, "id": "40000000-0000-4000-8000-000000000001"}]');

-- None of that wrote anything
SELECT stream_id, version FROM es_streams WHERE stream_id LIKE 'pay-%' ORDER BY stream_id;
SELECT count(*) FROM es_events WHERE stream_id LIKE 'pay-%';
