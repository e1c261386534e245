-- Baseline: a plain INSERT of the same row into raw_events.  global_position
-- (sequence), event_id (gen_random_uuid()) and recorded_at come from column
-- defaults.  Version: a per-client counter :n (pgbench -D n=0, kept by each
-- client across transactions) -- strictly increasing within a client, and
-- the stream id carries the client id and the run tag, so (stream_id,
-- version) never collides.  Versions within a stream are increasing but not
-- contiguous, which a raw INSERT does not care about.
\set s random(1, :streams)
\set n :n + 1
INSERT INTO raw_events (stream_id, version, event_type, data)
VALUES (concat('acct-', :run::int, '-', :client_id::int, '-', :s::int), :n::bigint, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb);
