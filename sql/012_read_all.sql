-- Reads in global order: es_read_all, es_read_category (with consumer
-- groups), es_wait, es_stream_hash.  The concurrent cases (the horizon) are
-- isolation specs and the follower test; here: arguments, filters, paging,
-- upcasting, the index, and every error path.

SELECT count(*) > 0 AS store_not_empty FROM es_events;
SELECT last_value AS before_this_test FROM es_events_global_position_seq \gset

SELECT es_append('ga-1', 0, '[{"type": "Opened", "data": {"n": 1}}, {"type": "Deposited", "data": {"n": 2}}]');
SELECT es_append('gb-1', 0, 'Opened', '{"n": 3}');
SELECT es_append('ga-2', 0, 'Opened', '{"n": 4}');
SELECT es_append('ga-1', 2, 'Withdrawn', '{"n": 5}');

-- Everything after a position, in global order
SELECT global_position - :before_this_test AS pos, stream_id, version, event_type
FROM es_read_all(:before_this_test);
-- Paging: a reader keeps the last position it saw and asks again after it
SELECT global_position - :before_this_test AS pos, stream_id FROM es_read_all(:before_this_test, 2);
SELECT global_position - :before_this_test AS pos, stream_id FROM es_read_all(:before_this_test + 2, 2);
SELECT global_position - :before_this_test AS pos, stream_id FROM es_read_all(:before_this_test + 4, 2);
SELECT count(*) FROM es_read_all(:before_this_test + 5, 2);
-- max_count 0 reads nothing, NULL reads everything
SELECT count(*) FROM es_read_all(:before_this_test, 0);
SELECT count(*) FROM es_read_all(:before_this_test, NULL);
-- Filtered by event type
SELECT global_position - :before_this_test AS pos, event_type
FROM es_read_all(:before_this_test, 100, ARRAY['Opened', 'Withdrawn']);
SELECT count(*) FROM es_read_all(:before_this_test, 100, ARRAY[]::text[]);
-- The defaults: from the start, 1,000 at most
SELECT count(*) = least(1000, (SELECT count(*) FROM es_events)) AS default_page FROM es_read_all();

-- A category in global order; consumer groups split it by stream
SELECT global_position - :before_this_test AS pos, stream_id, version FROM es_read_category('ga', :before_this_test);
SELECT global_position - :before_this_test AS pos, stream_id FROM es_read_category('ga', :before_this_test, 2);
SELECT count(*) FROM es_read_category('gb', :before_this_test);
SELECT count(*) FROM es_read_category('nope');
SELECT es_stream_hash('ga-1') % 2 AS ga_1_member, es_stream_hash('ga-2') % 2 AS ga_2_member;
SELECT k AS member, stream_id, version
FROM generate_series(0, 1) k, es_read_category('ga', :before_this_test, 100, k, 2)
ORDER BY k, global_position;
-- a group of one is the whole category
SELECT count(*) FROM es_read_category('ga', :before_this_test, 100, 0, 1);

-- The consumer-group hash: 64-bit FNV-1a of the id's bytes, top bit cleared
SELECT s, es_stream_hash(s) FROM (VALUES (''), ('a'), ('order-1'), ('ünï')) v(s);
SELECT es_stream_hash(NULL);

-- A disjoint cover, over many streams and several group sizes
SELECT count(es_append('gc-' || g, NULL, 'Tick', '{}')) FROM generate_series(1, 200) g;
SELECT n AS group_size,
       (SELECT count(*) FROM generate_series(0, n - 1) k, es_read_category('gc', 0, NULL, k, n)) AS members_total,
       (SELECT count(DISTINCT global_position) FROM generate_series(0, n - 1) k, es_read_category('gc', 0, NULL, k, n)) AS distinct_events,
       (SELECT count(*) FROM es_read_category('gc', 0, NULL)) AS category_total,
       (SELECT min(c) FROM (SELECT count(*) AS c FROM generate_series(0, n - 1) k, es_read_category('gc', 0, NULL, k, n) GROUP BY k) m) > 0 AS every_member_has_some
FROM (VALUES (1), (2), (3), (7)) v(n);

-- Reads in global order upcast like every read
CREATE FUNCTION opened_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT data || '{"v": 2}' $$;
SELECT es_register_upcaster('Opened', 1, 'opened_v1_to_v2(jsonb)');
SELECT stream_id, event_type, schema_version, data FROM es_read_all(:before_this_test, 3);
SELECT stream_id, event_type, schema_version, data FROM es_read_category('gb', :before_this_test);
SELECT es_unregister_upcaster('Opened', 1);

-- Category reads use the index on (es_category(stream_id), global_position):
-- the plan of es_read_category's query
ANALYZE es_events;
EXPLAIN (COSTS OFF)
SELECT * FROM es_events WHERE es_category(stream_id) = 'ga' AND global_position > 0
AND global_position <= 1000000 ORDER BY global_position LIMIT 1000;

-- es_wait: returns at once when something is readable after the position,
-- after the timeout (with after_position) when nothing is
SELECT es_wait(:before_this_test, 10000) - :before_this_test AS readable_up_to;
SELECT es_wait((SELECT max(global_position) FROM es_events), 50) = (SELECT max(global_position) FROM es_events) AS timed_out;
SELECT es_wait((SELECT max(global_position) FROM es_events), 0) = (SELECT max(global_position) FROM es_events) AS no_wait;

-- es_wait is interruptible: statement_timeout cancels it (SQLSTATE 57014)
SELECT max(global_position) AS newest FROM es_events \gset
SET statement_timeout = '200ms';
SELECT es_wait(:newest, 60000);
RESET statement_timeout;

-- Errors
SELECT case_name, es_test.sqlstate_of(statement) AS result FROM (VALUES
    ('all: null position',        $$SELECT * FROM es_read_all(NULL)$$),
    ('all: negative position',    $$SELECT * FROM es_read_all(-1)$$),
    ('all: negative count',       $$SELECT * FROM es_read_all(0, -1)$$),
    ('category: null',            $$SELECT * FROM es_read_category(NULL)$$),
    ('category: empty',           $$SELECT * FROM es_read_category('')$$),
    ('category: null position',   $$SELECT * FROM es_read_category('ga', NULL)$$),
    ('category: negative',        $$SELECT * FROM es_read_category('ga', -5)$$),
    ('category: negative count',  $$SELECT * FROM es_read_category('ga', 0, -1)$$),
    ('group: member only',        $$SELECT * FROM es_read_category('ga', 0, 10, 0, NULL)$$),
    ('group: size only',          $$SELECT * FROM es_read_category('ga', 0, 10, NULL, 2)$$),
    ('group: size 0',             $$SELECT * FROM es_read_category('ga', 0, 10, 0, 0)$$),
    ('group: member = size',      $$SELECT * FROM es_read_category('ga', 0, 10, 2, 2)$$),
    ('group: negative member',    $$SELECT * FROM es_read_category('ga', 0, 10, -1, 2)$$),
    ('wait: null position',       $$SELECT es_wait(NULL)$$),
    ('wait: negative position',   $$SELECT es_wait(-1)$$),
    ('wait: null timeout',        $$SELECT es_wait(0, NULL)$$),
    ('wait: negative timeout',    $$SELECT es_wait(0, -1)$$)
) AS cases(case_name, statement);
