-- es_append of one event, expected_version NULL (any).  Each client appends
-- to its own 100 streams (acct-<run>-<client>-<1..100>): no contention.
\set s random(1, 100)
SELECT es_append(concat('acct-', :run::int, '-', :client_id::int, '-', :s::int), NULL, 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb);
