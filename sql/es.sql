/*
 * es — install script (source of sql/es--<version>.sql; the Makefile copies it).
 *
 * Every object is created in the extension's schema and referenced through
 * @extschema@, and built-ins through pg_catalog, so a caller's search_path can
 * neither break nor hijack anything below.
 */
\echo Use "CREATE EXTENSION es" to load this file. \quit

/*
 * Storage
 */

-- Global positions.  CACHE 1 on purpose: positions handed out from a
-- per-backend cache would be taken out of order with respect to time, which
-- the gap-free global order (es_read_all) relies on.
CREATE SEQUENCE @extschema@.es_events_global_position_seq
    AS bigint MINVALUE 1 NO CYCLE CACHE 1;

CREATE TABLE @extschema@.es_events (
    global_position bigint      NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT es_events_pkey PRIMARY KEY (global_position),
    CONSTRAINT es_events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT es_events_event_id_key UNIQUE (event_id)
);

ALTER SEQUENCE @extschema@.es_events_global_position_seq
    OWNED BY @extschema@.es_events.global_position;

COMMENT ON TABLE @extschema@.es_events IS
    'Every event ever appended, immutable; written only by es_append';

-- One row per stream: its current version.  es_append locks this row to
-- serialise appends to one stream; appends to different streams touch
-- different rows and never wait for each other.  The fillfactor leaves room
-- on each page so that version bumps are HOT updates.
CREATE TABLE @extschema@.es_streams (
    stream_id  text        NOT NULL,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT es_streams_pkey PRIMARY KEY (stream_id)
) WITH (fillfactor = 70);

COMMENT ON TABLE @extschema@.es_streams IS
    'One row per stream with its current version; maintained by es_append';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_events_global_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_streams', '');

/*
 * Type returned by every read
 */
CREATE TYPE @extschema@.es_event AS (
    global_position bigint,
    stream_id       text,
    version         bigint,
    event_id        uuid,
    event_type      text,
    schema_version  integer,
    data            jsonb,
    metadata        jsonb,
    recorded_at     timestamptz
);

COMMENT ON TYPE @extschema@.es_event IS
    'An event as returned by the es_read* functions (upcast to its newest schema version)';

/*
 * Immutability: UPDATE, DELETE and TRUNCATE of stored events fail with SE405.
 * ENABLE ALWAYS makes the triggers fire under session_replication_role =
 * replica too.
 */
CREATE FUNCTION @extschema@.es_events_immutable()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_events_immutable'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.es_events_immutable() IS
    'Trigger function: refuses UPDATE, DELETE and TRUNCATE of stored events (SQLSTATE SE405)';

CREATE TRIGGER es_events_immutable
    BEFORE UPDATE OR DELETE ON @extschema@.es_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_events_immutable();
CREATE TRIGGER es_events_no_truncate
    BEFORE TRUNCATE ON @extschema@.es_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_events_immutable();
ALTER TABLE @extschema@.es_events ENABLE ALWAYS TRIGGER es_events_immutable;
ALTER TABLE @extschema@.es_events ENABLE ALWAYS TRIGGER es_events_no_truncate;

-- es_streams is derived from es_events (es_append updates its versions); a
-- deleted row would let a stream start over at version 1.
CREATE TRIGGER es_streams_no_delete
    BEFORE DELETE ON @extschema@.es_streams
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_events_immutable();
CREATE TRIGGER es_streams_no_truncate
    BEFORE TRUNCATE ON @extschema@.es_streams
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_events_immutable();
ALTER TABLE @extschema@.es_streams ENABLE ALWAYS TRIGGER es_streams_no_delete;
ALTER TABLE @extschema@.es_streams ENABLE ALWAYS TRIGGER es_streams_no_truncate;

/*
 * Append
 */
CREATE FUNCTION @extschema@.es_append(
    stream_id text,
    expected_version bigint,
    event_type text,
    data jsonb,
    metadata jsonb DEFAULT NULL,
    event_id uuid DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_append'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.es_append(text, bigint, text, jsonb, jsonb, uuid) IS
    'Appends one event to a stream if it is at expected_version (NULL: any, -1: must exist); returns the new version';

CREATE FUNCTION @extschema@.es_append(
    stream_id text,
    expected_version bigint,
    events jsonb)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_append_batch'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.es_append(text, bigint, jsonb) IS
    'Appends a JSON array of events atomically, with consecutive versions; returns the new version';

/*
 * Read
 */
CREATE FUNCTION @extschema@.es_read(
    stream_id text,
    from_version bigint DEFAULT 1,
    max_count bigint DEFAULT NULL)
RETURNS SETOF @extschema@.es_event
AS 'MODULE_PATHNAME', 'es_read'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 100;

COMMENT ON FUNCTION @extschema@.es_read(text, bigint, bigint) IS
    'Events of a stream from from_version on, in version order (at most max_count; NULL: all)';

CREATE FUNCTION @extschema@.es_read_backward(
    stream_id text,
    from_version bigint DEFAULT NULL,
    max_count bigint DEFAULT NULL)
RETURNS SETOF @extschema@.es_event
AS 'MODULE_PATHNAME', 'es_read_backward'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 100;

COMMENT ON FUNCTION @extschema@.es_read_backward(text, bigint, bigint) IS
    'Events of a stream from from_version (NULL: the newest) down, in descending version order';

CREATE FUNCTION @extschema@.es_stream_version(stream_id text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_stream_version'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.es_stream_version(text) IS
    'Current version of a stream; 0 when the stream does not exist';

CREATE FUNCTION @extschema@.es_category(stream_id text)
RETURNS text
AS 'MODULE_PATHNAME', 'es_category'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.es_category(text) IS
    'Category of a stream id: the part before the first "-", or the whole id when there is none';
