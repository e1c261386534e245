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

CREATE FUNCTION @extschema@.es_stream_hash(stream_id text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_stream_hash'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.es_stream_hash(text) IS
    'Consumer-group hash of a stream id: 64-bit FNV-1a of its bytes, top bit cleared';

-- Category reads: one category in global order without scanning the table.
CREATE INDEX es_events_category_idx
    ON @extschema@.es_events (@extschema@.es_category(stream_id), global_position);

/*
 * Reads in global order
 */
CREATE FUNCTION @extschema@.es_read_all(
    after_position bigint DEFAULT 0,
    max_count bigint DEFAULT 1000,
    event_types text[] DEFAULT NULL)
RETURNS SETOF @extschema@.es_event
AS 'MODULE_PATHNAME', 'es_read_all'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 1000;

COMMENT ON FUNCTION @extschema@.es_read_all(bigint, bigint, text[]) IS
    'Events after after_position in global order, never past an event that can still commit (gap-free)';

CREATE FUNCTION @extschema@.es_read_category(
    category text,
    after_position bigint DEFAULT 0,
    max_count bigint DEFAULT 1000,
    group_member integer DEFAULT NULL,
    group_size integer DEFAULT NULL)
RETURNS SETOF @extschema@.es_event
AS 'MODULE_PATHNAME', 'es_read_category'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 1000;

COMMENT ON FUNCTION @extschema@.es_read_category(text, bigint, bigint, integer, integer) IS
    'Events of one category after after_position in global order (gap-free); optionally one consumer group member''s share';

CREATE FUNCTION @extschema@.es_wait(
    after_position bigint,
    timeout_ms integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_wait'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.es_wait(bigint, integer) IS
    'Waits until es_read_all can return an event after after_position; returns the newest readable position, or after_position on timeout';

DO $$
BEGIN
    IF NOT 'es' = ANY (pg_catalog.string_to_array(
            pg_catalog.replace(pg_catalog.current_setting('shared_preload_libraries'), ' ', ''), ',')) THEN
        RAISE WARNING 'es is not in shared_preload_libraries'
            USING DETAIL = 'Without it, every es_read_all and es_read_category waits for the appending transactions in flight, es_wait polls, appends send their own notifications, and there is no background worker.',
                  HINT = 'Add es to shared_preload_libraries and restart the server.';
    END IF;
END
$$;

/*
 * Upcasters
 */

-- One row per schema step: the function registered from_schema_version v
-- turns the data of an event_type event of schema version v into v + 1.
-- The function is kept as its schema-qualified signature (text, not
-- regprocedure), so that the table survives pg_dump/pg_restore and
-- pg_upgrade; es resolves it when it loads the registry.
CREATE TABLE @extschema@.es_upcasters (
    event_type          text        NOT NULL,
    from_schema_version integer     NOT NULL,
    function            text        NOT NULL,
    registered_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT es_upcasters_pkey PRIMARY KEY (event_type, from_schema_version),
    CONSTRAINT es_upcasters_from_schema_version_check CHECK (from_schema_version >= 1)
);

COMMENT ON TABLE @extschema@.es_upcasters IS
    'Registered upcasters: per event type, one function per schema version step';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_upcasters', '');

-- Every reader and writer loads the registry; registering is for the owner.
GRANT SELECT ON @extschema@.es_upcasters TO PUBLIC;

-- Every change, however made, drops every session's upcaster cache at commit.
CREATE FUNCTION @extschema@.es_upcasters_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_upcasters_changed'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.es_upcasters_changed() IS
    'Trigger function: tells every session to reload the upcaster registry';

CREATE TRIGGER es_upcasters_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.es_upcasters
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_upcasters_changed();
ALTER TABLE @extschema@.es_upcasters ENABLE ALWAYS TRIGGER es_upcasters_changed;

CREATE FUNCTION @extschema@.es_register_upcaster(
    event_type text,
    from_schema_version integer,
    fn regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proc record;
    signature text;
    registered text;
BEGIN
    IF es_register_upcaster.event_type IS NULL
       OR es_register_upcaster.from_schema_version IS NULL
       OR es_register_upcaster.fn IS NULL THEN
        RAISE EXCEPTION 'event_type, from_schema_version and fn must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF es_register_upcaster.event_type = '' THEN
        RAISE EXCEPTION 'event_type must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF es_register_upcaster.from_schema_version < 1 THEN
        RAISE EXCEPTION 'from_schema_version must be at least 1'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('It is %s.', es_register_upcaster.from_schema_version);
    END IF;

    SELECT p.proname, n.nspname, p.pronargs, p.proargtypes, p.prorettype, p.proretset, p.prokind
      INTO proc
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.oid = es_register_upcaster.fn;
    IF NOT FOUND OR proc.prokind <> 'f' OR proc.pronargs <> 1 OR proc.proargtypes[0] <> 'jsonb'::regtype
       OR proc.prorettype <> 'jsonb'::regtype OR proc.proretset THEN
        RAISE EXCEPTION 'function % cannot be an upcaster', es_register_upcaster.fn
            USING ERRCODE = 'undefined_function',
                  DETAIL = 'An upcaster takes one jsonb argument (the event data) and returns jsonb (the data of the next schema version), one row.';
    END IF;
    signature := pg_catalog.format('%I.%I(jsonb)', proc.nspname, proc.proname);

    -- One registration at a time, so that the gap and replacement checks
    -- below see every committed step.
    LOCK TABLE @extschema@.es_upcasters IN SHARE ROW EXCLUSIVE MODE;

    SELECT u.function INTO registered
      FROM @extschema@.es_upcasters u
     WHERE u.event_type = es_register_upcaster.event_type
       AND u.from_schema_version = es_register_upcaster.from_schema_version;
    IF FOUND THEN
        IF pg_catalog.to_regprocedure(registered) = es_register_upcaster.fn THEN
            RETURN;             -- the same step again: nothing to do
        END IF;
        RAISE EXCEPTION 'an upcaster of event type "%" from schema version % is already registered',
                es_register_upcaster.event_type, es_register_upcaster.from_schema_version
            USING ERRCODE = 'duplicate_object',
                  DETAIL = pg_catalog.format('It is %s.', registered),
                  HINT = 'To replace it, change that function (CREATE OR REPLACE FUNCTION), or unregister the step first.';
    END IF;

    IF es_register_upcaster.from_schema_version > 1 AND NOT EXISTS (
        SELECT FROM @extschema@.es_upcasters u
         WHERE u.event_type = es_register_upcaster.event_type
           AND u.from_schema_version = es_register_upcaster.from_schema_version - 1) THEN
        RAISE EXCEPTION 'upcaster of event type "%" from schema version % would leave a gap',
                es_register_upcaster.event_type, es_register_upcaster.from_schema_version
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('No upcaster from schema version %s is registered.',
                                             es_register_upcaster.from_schema_version - 1),
                  HINT = 'Register the steps in order, from schema version 1 on.';
    END IF;

    INSERT INTO @extschema@.es_upcasters (event_type, from_schema_version, function)
    VALUES (es_register_upcaster.event_type, es_register_upcaster.from_schema_version, signature);
END
$$;

COMMENT ON FUNCTION @extschema@.es_register_upcaster(text, integer, regprocedure) IS
    'Registers fn(jsonb) RETURNS jsonb as the upcaster of event_type from from_schema_version to the next';

CREATE FUNCTION @extschema@.es_unregister_upcaster(
    event_type text,
    from_schema_version integer)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    newest integer;
BEGIN
    IF es_unregister_upcaster.event_type IS NULL
       OR es_unregister_upcaster.from_schema_version IS NULL THEN
        RAISE EXCEPTION 'event_type and from_schema_version must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    LOCK TABLE @extschema@.es_upcasters IN SHARE ROW EXCLUSIVE MODE;

    SELECT max(u.from_schema_version) INTO newest
      FROM @extschema@.es_upcasters u
     WHERE u.event_type = es_unregister_upcaster.event_type;
    IF newest IS NULL OR es_unregister_upcaster.from_schema_version > newest
       OR es_unregister_upcaster.from_schema_version < 1 THEN
        RAISE EXCEPTION 'no upcaster of event type "%" from schema version % is registered',
                es_unregister_upcaster.event_type, es_unregister_upcaster.from_schema_version
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF es_unregister_upcaster.from_schema_version < newest THEN
        RAISE EXCEPTION 'only the newest upcaster of event type "%" can be unregistered',
                es_unregister_upcaster.event_type
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('The newest step is from schema version %s.', newest),
                  HINT = 'Unregister the steps from the newest down.';
    END IF;

    DELETE FROM @extschema@.es_upcasters u
     WHERE u.event_type = es_unregister_upcaster.event_type
       AND u.from_schema_version = es_unregister_upcaster.from_schema_version;
END
$$;

COMMENT ON FUNCTION @extschema@.es_unregister_upcaster(text, integer) IS
    'Unregisters the newest upcaster step of an event type';
