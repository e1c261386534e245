-- es_append, single-event form: the four kinds of expected version.

-- 0: the stream must not exist yet
SELECT es_append('order-1', 0, 'OrderPlaced', '{"total": 10}');
-- n: the stream must be at exactly n
SELECT es_append('order-1', 1, 'ItemAdded', '{"sku": "A"}', '{"user": "u1"}');
-- NULL: any version, creates the stream when needed
SELECT es_append('order-1', NULL, 'ItemAdded', '{"sku": "B"}');
SELECT es_append('order-2', NULL, 'OrderPlaced', '{"total": 20}');
-- -1: the stream must exist, any version
SELECT es_append('order-1', -1, 'OrderShipped', '{}');

-- Versions are 1, 2, 3... per stream; global positions increase
SELECT global_position, stream_id, version, event_type, schema_version, data, metadata
FROM es_events ORDER BY global_position;
SELECT stream_id, version, created_at <= updated_at AS sane_times FROM es_streams ORDER BY stream_id;

-- Every event gets a distinct random (version 4) UUID when none is given
SELECT count(DISTINCT event_id) AS distinct_ids,
       bool_and(substr(event_id::text, 15, 1) = '4') AS all_version_4
FROM es_events;

-- An explicit event id is stored as given
SELECT es_append('order-3', 0, 'OrderPlaced', '{}', NULL, '00000000-0000-4000-8000-000000000001');
SELECT event_id FROM es_events WHERE stream_id = 'order-3';

-- Wrong expected version: SE409 with stream, expected and actual version
\set VERBOSITY default
SELECT es_append('order-1', 2, 'ItemAdded', '{}');
SELECT es_append('order-1', 0, 'OrderPlaced', '{}');
SELECT es_append('order-9', 3, 'ItemAdded', '{}');
SELECT es_append('order-9', -1, 'ItemAdded', '{}');

-- A failed check takes no global position: the next event gets the next one
SELECT es_append('order-2', 1, 'ItemAdded', '{}');
SELECT stream_id, version, global_position FROM es_events ORDER BY global_position DESC LIMIT 2;

-- recorded_at is the transaction's time
SELECT bool_and(recorded_at <= now()) AS recorded_in_the_past FROM es_events;

-- data and metadata keep JSON as jsonb does; empty objects are fine
SELECT es_append('misc', NULL, 'E', '{"nested": {"a": [1, 2, {"b": null}]}, "s": "ünïcødé"}', '{}');
SELECT data, metadata FROM es_events WHERE stream_id = 'misc';

-- Stream ids are case-sensitive and may contain anything
SELECT es_append('Order-1', 0, 'X', '{}');
SELECT es_append('with space/slash', 0, 'X', '{}');
SELECT stream_id, version FROM es_streams ORDER BY stream_id COLLATE "C";
