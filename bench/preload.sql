/*
 * bench/preload.sql — bulk-loads streams load-:first .. load-:last, 100
 * events each, for the growth benchmark (psql -v first=... -v last=...),
 * into es_events + es_streams and the same rows into raw_events.
 *
 * A shortcut: rows go straight into es_events and es_streams with one
 * INSERT ... SELECT each, as superuser, instead of through es_append
 * (inserting into es_events is allowed; only UPDATE, DELETE and TRUNCATE
 * are refused).  The rows are what es_append would have written: positions
 * from es's own sequence in stream order, versions 1..100, random event
 * ids, one es_streams row per stream at version 100.
 */
BEGIN;
INSERT INTO es_events (global_position, stream_id, version, event_id, event_type, data)
SELECT nextval('es_events_global_position_seq'), 'load-' || s, v, gen_random_uuid(),
       'Deposited', jsonb_build_object('amount', v, 'currency', 'EUR')
FROM generate_series(:first, :last) AS s, generate_series(1, 100) AS v;
INSERT INTO es_streams (stream_id, version)
SELECT 'load-' || s, 100 FROM generate_series(:first, :last) AS s;
INSERT INTO raw_events (stream_id, version, event_type, data)
SELECT 'load-' || s, v, 'Deposited', jsonb_build_object('amount', v, 'currency', 'EUR')
FROM generate_series(:first, :last) AS s, generate_series(1, 100) AS v;
COMMIT;
