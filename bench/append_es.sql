-- es_append of one event, expected_version NULL (any).  Each client appends
-- to its own :streams streams (acct-<run>-<client>-<1..:streams>; run.sh
-- passes -D streams=ES_BENCH_STREAMS, default 100): no contention.
\set s random(1, :streams)
SELECT es_append(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int), NULL, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb);
