-- es_append, batch form: a JSON array appended atomically with consecutive versions.

SELECT es_append('cart-1', 0, '[
    {"type": "CartCreated", "data": {"user": "u1"}},
    {"type": "ItemAdded", "data": {"sku": "A"}, "metadata": {"ip": "10.0.0.1"}},
    {"type": "ItemAdded", "data": {"sku": "B"}, "metadata": null, "schema_version": 2},
    {"type": "ItemAdded", "data": {"sku": "C"}, "id": "00000000-0000-4000-8000-0000000000c1"}
]');
SELECT version, event_type, schema_version, data, metadata,
       event_id = '00000000-0000-4000-8000-0000000000c1' AS given_id
FROM es_read('cart-1');

-- Positions follow array order
SELECT bool_and(d > 0) AS positions_increase_with_version
FROM (SELECT global_position - lag(global_position) OVER (ORDER BY version) AS d
      FROM es_events WHERE stream_id = 'cart-1') s;

-- Expected version applies to the whole batch
SELECT es_append('cart-1', 4, '[{"type": "CheckedOut", "data": {}}, {"type": "Paid", "data": {}}]');
SELECT es_append('cart-1', 4, '[{"type": "CheckedOut", "data": {}}]');
SELECT es_append('cart-1', NULL, '[{"type": "Shipped", "data": {}}]');
SELECT es_append('cart-1', -1, '[{"type": "Delivered", "data": {}}]');
SELECT es_append('cart-2', -1, '[{"type": "Delivered", "data": {}}]');
SELECT version, event_type FROM es_read('cart-1', 5);

-- Alternative UUID spellings are accepted
SELECT es_append('cart-3', 0, '[
    {"type": "A", "data": {}, "id": "{00000000-0000-4000-8000-0000000000d1}"},
    {"type": "B", "data": {}, "id": "000000000000400080000000000000D2"}
]');
SELECT version, event_id FROM es_events WHERE stream_id = 'cart-3' ORDER BY version;

-- A malformed element fails the whole batch, naming its index, and writes nothing
SELECT count(*) AS events_before FROM es_events;
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": 7}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B"}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"data": {}}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "", "data": {}}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": 5, "data": {}}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, "B"]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}, "metadata": []}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}, "id": "nope"}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}, "id": 17}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}, "schema_version": 0}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}, "schema_version": "2"}]');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}, "Type": "x"}]');
SELECT es_append('cart-4', 0, '[]');
SELECT es_append('cart-4', 0, '{"type": "A", "data": {}}');
SELECT es_append('cart-4', 0, '"A"');
SELECT es_append('cart-4', 0, '[{"type": "A", "data": {}, "id": "00000000-0000-4000-8000-0000000000e1"},
                                 {"type": "B", "data": {}, "id": "00000000-0000-4000-8000-0000000000e1"}]');
SELECT count(*) AS events_after FROM es_events;
SELECT count(*) AS cart_4_streams FROM es_streams WHERE stream_id = 'cart-4';

-- A big batch
SELECT es_append('cart-5', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', jsonb_build_object('n', i)))
                               FROM generate_series(1, 1000) i));
SELECT count(*), min(version), max(version), bool_and((data->>'n')::int = version) AS in_order
FROM es_read('cart-5');
-- Generated ids: random version-4 UUIDs, all distinct, also across the
-- refills of the backend's pool of random bytes (256 ids each)
SELECT count(DISTINCT event_id) AS distinct_ids,
       bool_and(event_id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') AS all_v4
FROM es_events WHERE stream_id = 'cart-5';
SELECT count(es_append('cart-6', NULL, 'Tick', '{}')) FROM generate_series(1, 600);
SELECT count(DISTINCT event_id) AS distinct_ids,
       bool_and(event_id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') AS all_v4
FROM es_events WHERE stream_id = 'cart-6';
