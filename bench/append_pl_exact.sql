-- Baseline: the PL/pgSQL store with the exact expected version, read first:
-- two round trips, like append_es_exact.sql.
\set s random(1, :streams)
SELECT pl_stream_version(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int)) AS v \gset
SELECT pl_append(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int), :v::bigint, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb);
