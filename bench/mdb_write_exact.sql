-- message-db (MESSAGE_DB_DIR; database message_db): write_message of one
-- event with the exact expected version, read first with stream_version --
-- two round trips, like append_es_exact.sql.  Each client writes to its own
-- category (acct<run>c<client>): message-db 1.3.0 serialises writers with an
-- advisory lock on the category's hash.  A new stream's version is -1.
\set s random(1, :streams)
SELECT coalesce(message_store.stream_version(concat('acct', :run::int, 'c', :client_id::int, '-', :s::int)), -1) AS v \gset
SELECT message_store.write_message(gen_random_uuid()::text, concat('acct', :run::int, 'c', :client_id::int, '-', :s::int), 'Deposited', '{"amount": 100, "currency": "EUR"}'::jsonb, NULL, :v::bigint);
