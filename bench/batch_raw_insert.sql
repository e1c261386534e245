-- Baseline: one INSERT ... SELECT of 100 rows into raw_events, the rows
-- generated server-side (generate_series), so nothing is sent or parsed per
-- row.  Versions :n * 100 + 1 .. :n * 100 + 100 with a per-client counter :n
-- (see append_raw.sql): unique.
\set s random(1, :streams)
\set n :n + 1
INSERT INTO raw_events (stream_id, version, event_type, data)
SELECT concat('batch-', :run::int, '-', :client_id::int, '-', :s::int), :n::bigint * 100 + i, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb
FROM generate_series(1, 100) AS i;
