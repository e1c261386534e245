/*
 * bench/raw_events.sql — the baseline table of the raw INSERT and COPY
 * benchmarks (included by schema.sql; run.sh also creates it in the growth
 * database).
 *
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

-- es_events also has this index, for es_read_category.
CREATE INDEX raw_events_category_idx ON raw_events (es_category(stream_id), global_position);
