/*
 * bench/schema.sql — what bench/run.sh installs in the benchmark database:
 * the extension, the raw-INSERT/COPY baseline table and the PL/pgSQL store.
 */
CREATE EXTENSION es;

/*
 * raw_events: the same columns, types and indexes as es_events (PK on
 * global_position from a CACHE 1 sequence, like es's; UNIQUE (stream_id,
 * version); UNIQUE event_id), with defaults for what es fills in itself:
 * global_position, event_id (gen_random_uuid()), schema_version, recorded_at.
 * No triggers, no streams table, no checks: a plain INSERT is the floor.
 */
CREATE SEQUENCE raw_events_global_position_seq AS bigint;
CREATE TABLE raw_events (
    global_position bigint      PRIMARY KEY DEFAULT nextval('raw_events_global_position_seq'),
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version),
    UNIQUE (event_id)
);
ALTER SEQUENCE raw_events_global_position_seq OWNED BY raw_events.global_position;

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
