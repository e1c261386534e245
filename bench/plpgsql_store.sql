/*
 * bench/plpgsql_store.sql — the PL/pgSQL baseline for bench/run.sh.
 *
 * The event store a competent team would hand-roll in PL/pgSQL, with the
 * same append semantics as es_append (expected_version NULL = any, 0 = new
 * stream, n = exactly n, -1 = must exist; SQLSTATE SE409 on a mismatch) and
 * the same storage shape: a streams table whose row is the per-stream lock,
 * and an events table with the same columns and indexes as es_events.
 *
 * Deliberately efficient rather than naive: the expected-version check is
 * one statement that both locks the stream row and moves it on (an upsert
 * for "any", INSERT ... ON CONFLICT DO NOTHING for "new", UPDATE ... WHERE
 * version = n for "exactly n"), then one INSERT of the event(s).  A
 * concurrent appender waits on the stream row and then fails its check, so
 * it gets SE409 rather than a unique violation.
 *
 * Not implemented (es does it, but not on the paths benchmarked): the
 * idempotent retry by event id (es skips that lookup when the caller gives
 * no ids, as in every benchmark here), upcasting, size limits.
 */

CREATE SEQUENCE pl_events_global_position_seq AS bigint;   -- CACHE 1, like es

CREATE TABLE pl_streams (
    stream_id  text        PRIMARY KEY,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);

CREATE TABLE pl_events (
    global_position bigint      PRIMARY KEY DEFAULT nextval('pl_events_global_position_seq'),
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
ALTER SEQUENCE pl_events_global_position_seq OWNED BY pl_events.global_position;

-- Locks the stream row, checks the expected version and moves the stream
-- n_events versions on.  Returns the new version; raises SE409 on mismatch.
CREATE FUNCTION pl_advance_stream(p_stream_id text, p_expected_version bigint, n_events int)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
    v_actual  bigint;
BEGIN
    IF p_stream_id IS NULL OR p_stream_id = '' THEN
        RAISE EXCEPTION 'stream_id must not be NULL or empty' USING ERRCODE = '22023';
    END IF;

    IF p_expected_version IS NULL THEN
        INSERT INTO pl_streams AS s (stream_id, version) VALUES (p_stream_id, n_events)
        ON CONFLICT (stream_id) DO UPDATE
            SET version = s.version + excluded.version, updated_at = now()
        RETURNING s.version INTO v_version;
    ELSIF p_expected_version = 0 THEN
        INSERT INTO pl_streams (stream_id, version) VALUES (p_stream_id, n_events)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING version INTO v_version;
    ELSIF p_expected_version = -1 THEN
        UPDATE pl_streams SET version = version + n_events, updated_at = now()
        WHERE stream_id = p_stream_id
        RETURNING version INTO v_version;
    ELSIF p_expected_version > 0 THEN
        UPDATE pl_streams SET version = version + n_events, updated_at = now()
        WHERE stream_id = p_stream_id AND version = p_expected_version
        RETURNING version INTO v_version;
    ELSE
        RAISE EXCEPTION 'invalid expected_version %', p_expected_version USING ERRCODE = '22023';
    END IF;

    IF v_version IS NULL THEN
        SELECT version INTO v_actual FROM pl_streams WHERE stream_id = p_stream_id;
        RAISE EXCEPTION 'wrong expected version for stream "%"', p_stream_id
            USING ERRCODE = 'SE409',
                  DETAIL = format('Expected version %s, actual version %s.',
                                  p_expected_version, coalesce(v_actual, 0));
    END IF;
    RETURN v_version;
END
$$;

-- Single event.
CREATE FUNCTION pl_append(p_stream_id text, p_expected_version bigint, p_event_type text,
                          p_data jsonb, p_metadata jsonb DEFAULT NULL, p_event_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
BEGIN
    IF p_event_type IS NULL OR p_event_type = '' THEN
        RAISE EXCEPTION 'event_type must not be NULL or empty' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(p_data) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'event data must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF p_metadata IS NOT NULL AND jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION 'event metadata must be a JSON object or NULL' USING ERRCODE = '22023';
    END IF;

    v_version := pl_advance_stream(p_stream_id, p_expected_version, 1);

    INSERT INTO pl_events (stream_id, version, event_id, event_type, data, metadata)
    VALUES (p_stream_id, v_version, coalesce(p_event_id, gen_random_uuid()),
            p_event_type, p_data, p_metadata);
    RETURN v_version;
END
$$;

-- Batch: a JSON array of {"type", "data", "metadata"?, "id"?, "schema_version"?}.
CREATE FUNCTION pl_append(p_stream_id text, p_expected_version bigint, p_events jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n_events int;
    v_version bigint;
BEGIN
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION 'events must be a non-empty JSON array' USING ERRCODE = '22023';
    END IF;
    n_events := jsonb_array_length(p_events);
    IF EXISTS (SELECT FROM jsonb_array_elements(p_events) e
               WHERE jsonb_typeof(e) <> 'object'
                  OR jsonb_typeof(e->'type') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(e->'data') IS DISTINCT FROM 'object') THEN
        RAISE EXCEPTION 'every event must be an object with a string "type" and an object "data"'
            USING ERRCODE = '22023';
    END IF;

    v_version := pl_advance_stream(p_stream_id, p_expected_version, n_events);

    INSERT INTO pl_events (stream_id, version, event_id, event_type, schema_version, data, metadata)
    SELECT p_stream_id, v_version - n_events + e.n,
           coalesce((e.ev->>'id')::uuid, gen_random_uuid()),
           e.ev->>'type', coalesce((e.ev->>'schema_version')::int, 1),
           e.ev->'data', nullif(e.ev->'metadata', 'null'::jsonb)
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS e(ev, n);
    RETURN v_version;
END
$$;

CREATE FUNCTION pl_stream_version(p_stream_id text)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT version FROM pl_streams WHERE stream_id = p_stream_id), 0)
$$;
