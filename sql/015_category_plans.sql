-- Kept plans must be right for every argument, not on average.  A generic
-- plan of es_read_category walks the primary key and filters by category,
-- which on a sparse category reads most of the table; es's statement is
-- written so that even its generic plan reads the category index.  Here
-- 30,000 events are in category "dense" and 30, spread evenly among them,
-- in "sparse".  After many calls (a kept plan goes generic after five),
-- reading the sparse category must still go through the category index:
-- the primary key is not walked.
DO $$
BEGIN
    FOR i IN 1..30 LOOP
        PERFORM es_append('dense-' || i, NULL,
                          (SELECT jsonb_agg(jsonb_build_object('type', 'D', 'data', '{}'::jsonb))
                           FROM generate_series(1, 1000)));
        PERFORM es_append('sparse-1', NULL, 'S', '{}');
    END LOOP;
END $$;
ANALYZE es_events;

-- the kept statement serves the dense category first (walking the primary
-- key is the right plan there)
SELECT count(*) AS dense_events_read
FROM generate_series(1, 10) AS i, LATERAL es_read_category('dense', i * 1000, 100) AS e;

SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_pkey') AS pkey_before,
       sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_category_idx') AS category_before
FROM pg_stat_user_indexes WHERE relname = 'es_events' \gset

-- then 20 calls, each reading 10 sparse events after a position
SELECT count(*) AS sparse_events_read
FROM generate_series(1, 20) AS i,
     LATERAL es_read_category('sparse', (i % 10) * 1001, 10) AS e;

SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_pkey') - :pkey_before
           < 100 AS primary_key_not_walked,
       sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_category_idx') - :category_before
           BETWEEN 200 AND 400 AS category_index_read
FROM pg_stat_user_indexes WHERE relname = 'es_events';

-- The generic plan itself, whatever the plan cache would choose: the same
-- reads, and the dense category read through it returns the same events.
SET plan_cache_mode = force_generic_plan;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_pkey') AS pkey_before,
       sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_category_idx') AS category_before
FROM pg_stat_user_indexes WHERE relname = 'es_events' \gset
SELECT count(*) AS sparse_events_read
FROM generate_series(1, 20) AS i,
     LATERAL es_read_category('sparse', (i % 10) * 1001, 10) AS e;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_pkey') - :pkey_before
           < 100 AS generic_primary_key_not_walked,
       sum(idx_tup_read) FILTER (WHERE indexrelname = 'es_events_category_idx') - :category_before
           BETWEEN 200 AND 400 AS generic_category_index_read
FROM pg_stat_user_indexes WHERE relname = 'es_events';
SELECT (SELECT array_agg(global_position ORDER BY global_position) FROM es_read_category('dense', 5000, 50))
       = (SELECT array_agg(global_position ORDER BY global_position)
          FROM (SELECT global_position FROM es_events
                WHERE es_category(stream_id) = 'dense' AND global_position > 5000
                ORDER BY global_position LIMIT 50) AS raw) AS generic_dense_read_right,
       (SELECT array_agg(global_position ORDER BY global_position) FROM es_read_category('dense', 0, 100, 1, 3))
       = (SELECT array_agg(global_position ORDER BY global_position)
          FROM (SELECT global_position FROM es_events
                WHERE es_category(stream_id) = 'dense' AND es_stream_hash(stream_id) % 3 = 1
                ORDER BY global_position LIMIT 100) AS raw) AS generic_group_read_right;
RESET plan_cache_mode;

-- es_read_all's kept plan is generic: it walks the primary key from
-- after_position, right for every argument.  Planned per call (the plan
-- cache kept choosing custom plans for it), each call also probed the
-- primary key for the column's actual bounds (a tail read's positions lie
-- past the histogram), which costs more than a short read itself.  Each
-- read below must start one scan of the primary key, and no more (with
-- the plan cache choosing, the 40 reads started 50).
SELECT max(global_position) AS top FROM es_events \gset
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT idx_scan AS pkey_scans_before FROM pg_stat_user_indexes
WHERE indexrelname = 'es_events_pkey' \gset
-- (the last event is an "S", and so is the one 1,001 before it)
SELECT count(*) AS tail_events_read
FROM generate_series(1, 20) AS i,
     LATERAL es_read_all(:top - 30 + i, 5) AS e;
SELECT count(*) AS rare_events_read
FROM generate_series(1, 20) AS i,
     LATERAL es_read_all(:top - 1100 + i, 5, ARRAY['S']) AS e;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT idx_scan - :pkey_scans_before BETWEEN 40 AND 44 AS one_pkey_scan_per_read
FROM pg_stat_user_indexes WHERE indexrelname = 'es_events_pkey';
SELECT (SELECT array_agg(global_position ORDER BY global_position) FROM es_read_all(5000, 10, ARRAY['S']))
       = (SELECT array_agg(global_position ORDER BY global_position)
          FROM (SELECT global_position FROM es_events
                WHERE event_type = 'S' AND global_position > 5000
                ORDER BY global_position LIMIT 10) AS raw) AS rare_read_right;
