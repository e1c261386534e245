/*
 * bench/schema.sql — what bench/run.sh installs in the benchmark database:
 * the extension, the raw-INSERT/COPY baseline table and the PL/pgSQL store.
 */
CREATE EXTENSION es;

\ir raw_events.sql
\ir plpgsql_store.sql

/*
 * Streams for the read benchmark: read-1 .. read-10, 1,000 events each,
 * written through es_append (one batch per stream).
 */
SELECT es_append('read-' || s, 0,
                 (SELECT jsonb_agg(jsonb_build_object(
                             'type', 'Deposited',
                             'data', jsonb_build_object('amount', v, 'currency', 'EUR',
                                                        'note', 'benchmark event number ' || v)))
                  FROM generate_series(1, 1000) AS v))
FROM generate_series(1, 10) AS s;
