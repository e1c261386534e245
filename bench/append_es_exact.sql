-- es_append of one event with the exact expected version, read first with
-- es_stream_version: TWO round trips per transaction (each its own
-- autocommit transaction), as a client without a cached version would do.
\set s random(1, :streams)
SELECT es_stream_version(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int)) AS v \gset
SELECT es_append(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int), :v::bigint, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb);
