/*
 * bench/category_load.sql — the 1M events of the category reads (run.sh,
 * read group), straight into es_events + es_streams as preload.sql does:
 * event g (1..1,000,000) goes to category "sparse" (streams sparse-0..9,
 * event type Rare) when g is a multiple of 1,000, else to "dense" (streams
 * dense-0..9999, type Deposited).  "sparse" holds 1,000 events spread evenly
 * over the 1M, "dense" 999,000.  With -v mdb=1 the same rows go into
 * message-db's messages table instead (positions from 0).
 */
\if :mdb
INSERT INTO message_store.messages (stream_name, position, type, data)
SELECT CASE WHEN g % 1000 = 0 THEN 'sparse-' || (g / 1000) % 10 ELSE 'dense-' || g % 10000 END,
       g / 10000, CASE WHEN g % 1000 = 0 THEN 'Rare' ELSE 'Deposited' END,
       jsonb_build_object('amount', g, 'currency', 'EUR')
FROM generate_series(1, 1000000) AS g ORDER BY g;
VACUUM ANALYZE message_store.messages;
\else
INSERT INTO es_events (global_position, stream_id, version, event_id, event_type, data)
SELECT nextval('es_events_global_position_seq'),
       CASE WHEN g % 1000 = 0 THEN 'sparse-' || (g / 1000) % 10 ELSE 'dense-' || g % 10000 END,
       g / 10000 + 1, gen_random_uuid(), CASE WHEN g % 1000 = 0 THEN 'Rare' ELSE 'Deposited' END,
       jsonb_build_object('amount', g, 'currency', 'EUR')
FROM generate_series(1, 1000000) AS g ORDER BY g;
INSERT INTO es_streams (stream_id, version)
SELECT stream_id, max(version) FROM es_events
WHERE stream_id LIKE 'sparse-%' OR stream_id LIKE 'dense-%' GROUP BY stream_id;
VACUUM ANALYZE es_events, es_streams;
\endif
