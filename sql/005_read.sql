-- Reading streams: es_read, es_read_backward, es_stream_version, es_category.

SELECT es_append('acct-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', jsonb_build_object('n', i)))
                               FROM generate_series(1, 10) i));
SELECT es_append('acct-2', 0, 'Opened', '{}');

-- Forward, from a version, at most max_count
SELECT version, data FROM es_read('acct-1');
SELECT version FROM es_read('acct-1', 8);
SELECT version FROM es_read('acct-1', 3, 2);
SELECT version FROM es_read('acct-1', 1, 0);
SELECT version FROM es_read('acct-1', 11);
SELECT version FROM es_read('acct-1', from_version => 9, max_count => 100);

-- Backward: from the newest, or from a version down
SELECT version FROM es_read_backward('acct-1');
SELECT version FROM es_read_backward('acct-1', NULL, 3);
SELECT version FROM es_read_backward('acct-1', 4);
SELECT version FROM es_read_backward('acct-1', 4, 2);
SELECT version FROM es_read_backward('acct-1', 100, 1);

-- A stream that does not exist reads as empty
SELECT count(*) FROM es_read('nope');
SELECT count(*) FROM es_read_backward('nope');

-- Every column of es_event comes back as stored
SELECT (SELECT array_agg(e ORDER BY e.version)::text FROM es_read('acct-2') e)
     = (SELECT array_agg(ROW(global_position, stream_id, version, event_id, event_type,
                             schema_version, data, metadata, recorded_at)::es_event ORDER BY version)::text
        FROM es_events WHERE stream_id = 'acct-2') AS same_rows;

-- Usable as a table in joins, and with LATERAL
SELECT s.stream_id, count(e.*) FROM es_streams s, LATERAL es_read(s.stream_id) e
WHERE s.stream_id LIKE 'acct-%' GROUP BY 1 ORDER BY 1;

-- Stream versions
SELECT es_stream_version('acct-1'), es_stream_version('acct-2'), es_stream_version('nope');

-- Categories: the part before the first '-'
SELECT s, es_category(s) FROM (VALUES ('order-123'), ('order-123-x'), ('order'), ('-x'), ('x-'), (''), (NULL)) v(s);

-- Reads are read-only: they work in a READ ONLY transaction (as on a hot standby)
BEGIN READ ONLY;
SELECT count(*) FROM es_read('acct-1');
SELECT count(*) FROM es_read_backward('acct-1');
SELECT es_stream_version('acct-1');
COMMIT;

-- Appends are refused there
BEGIN READ ONLY;
SELECT es_append('acct-1', 10, 'Tick', '{}');
ROLLBACK;

-- Inside a transaction, reads see the transaction's own appends
BEGIN;
SELECT count(*) FROM es_read('acct-2');
SELECT es_append('acct-2', 1, 'Closed', '{}');
SELECT version, event_type FROM es_read('acct-2');
ROLLBACK;

-- A long stream read with a tiny work_mem (the result goes through a
-- tuplestore that spills to disk; tests/memory.sh checks memory use)
SELECT es_append('long-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', jsonb_build_object('pad', repeat('x', 200))))
                               FROM generate_series(1, 5000) i));
SET work_mem = '64kB';
SELECT count(*), min(version), max(version) FROM es_read('long-1');
SELECT count(*), min(version), max(version) FROM es_read_backward('long-1');
RESET work_mem;
