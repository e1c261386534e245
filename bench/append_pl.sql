-- Baseline: the PL/pgSQL store (plpgsql_store.sql), expected_version NULL.
\set s random(1, :streams)
SELECT pl_append(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int), NULL, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb);
