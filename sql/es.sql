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

-- The right to append is the right to call es_append, which writes es's
-- tables as their owner (src/privilege.c).  Nobody else can write them,
-- whatever they are granted: row-level security lets other roles read
-- (given SELECT) and never insert or update.  The owner is not subject to
-- it, so es_append, pg_restore and logical replication's apply work.
REVOKE EXECUTE ON FUNCTION @extschema@.es_append(text, bigint, text, jsonb, jsonb, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.es_append(text, bigint, jsonb) FROM PUBLIC;

ALTER TABLE @extschema@.es_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY es_events_read ON @extschema@.es_events FOR SELECT USING (true);
ALTER TABLE @extschema@.es_streams ENABLE ROW LEVEL SECURITY;
CREATE POLICY es_streams_read ON @extschema@.es_streams FOR SELECT USING (true);
-- An UPDATE by another role fails (42501) rather than silently matching nothing.
CREATE POLICY es_streams_no_update ON @extschema@.es_streams FOR UPDATE
    USING (true) WITH CHECK (false);

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

-- A change of a registry that background tasks follow (upcasters, which
-- make snapshots stale; aggregates; projections) wakes this database's
-- worker at commit.
CREATE FUNCTION @extschema@.es_registry_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_registry_changed'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.es_registry_changed() IS
    'Trigger function: wakes this database''s es worker when the transaction commits';

CREATE TRIGGER es_upcasters_wake_worker
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.es_upcasters
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_registry_changed();

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

REVOKE EXECUTE ON FUNCTION @extschema@.es_register_upcaster(text, integer, regprocedure) FROM PUBLIC;

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

REVOKE EXECUTE ON FUNCTION @extschema@.es_unregister_upcaster(text, integer) FROM PUBLIC;

/*
 * The background worker of this database
 */
CREATE FUNCTION @extschema@.es_get_worker_status(
    OUT pid integer,
    OUT started_at timestamptz,
    OUT state text,
    OUT last_task text,
    OUT last_report text,
    OUT last_report_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'es_get_worker_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 1;

COMMENT ON FUNCTION @extschema@.es_get_worker_status() IS
    'This database''s es background worker, as it reports itself (see the es_worker_status view)';

CREATE VIEW @extschema@.es_worker_status AS
    SELECT * FROM @extschema@.es_get_worker_status();

COMMENT ON VIEW @extschema@.es_worker_status IS
    'This database''s es background worker: pid, start, state and what it did last (no row when none runs)';

/*
 * Snapshots and aggregates
 */

-- One row per aggregate: the category it folds, and how.  apply is kept as
-- its schema-qualified signature and owner as a role name (text), so that
-- the registry survives pg_dump/pg_restore.  position is the automatic
-- snapshots' place in the category's gap-free global order; retry_at and
-- last_error are their backoff after a failure.
CREATE TABLE @extschema@.es_aggregates (
    category       text        NOT NULL,
    apply          text        NOT NULL,
    initial_state  jsonb       NOT NULL DEFAULT '{}',
    snapshot_every integer     NOT NULL DEFAULT 100,
    schema_version integer     NOT NULL DEFAULT 1,
    snapshot_after interval,
    owner          text        NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    position       bigint      NOT NULL DEFAULT 0,
    failures       integer     NOT NULL DEFAULT 0,
    retry_at       timestamptz,
    last_error     text,
    CONSTRAINT es_aggregates_pkey PRIMARY KEY (category),
    CONSTRAINT es_aggregates_snapshot_every_check CHECK (snapshot_every >= 0),
    CONSTRAINT es_aggregates_schema_version_check CHECK (schema_version >= 1)
);

COMMENT ON TABLE @extschema@.es_aggregates IS
    'Registered aggregates: per category, the apply function folded over its streams, and the snapshot strategy';

-- Snapshots: a stream's folded state at a version.  fingerprint is the
-- logic's (apply's definition and the upcaster registry) when it was taken;
-- NULL for a snapshot saved where the category has no aggregate.
CREATE TABLE @extschema@.es_snapshots (
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL,
    schema_version integer     NOT NULL DEFAULT 1,
    fingerprint    text,
    state          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT es_snapshots_pkey PRIMARY KEY (stream_id, version),
    CONSTRAINT es_snapshots_version_check CHECK (version >= 1)
);

COMMENT ON TABLE @extschema@.es_snapshots IS
    'Snapshots of streams (an optimisation of es_load: the state at a version); written only by es';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_aggregates', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_snapshots', '');

-- The automatic snapshots' queue (src/snapshot_task.c): streams the worker
-- must come back to at due_at, because a time-based snapshot (snapshot_after)
-- falls due then, or because taking one failed (failures, last_error: the
-- backoff).  The worker finds new work by following each category in global
-- order from es_aggregates.position; this table holds only what it passed
-- and must not forget.  Dumped: after a restore the streams, positions and
-- snapshots it refers to are the same, so every row still means what it
-- said.  Written by the worker as the tables' owner; not PUBLIC's to read
-- (last_error may quote event data).
CREATE TABLE @extschema@.es_snapshot_queue (
    stream_id  text        NOT NULL,
    category   text        NOT NULL,
    due_at     timestamptz NOT NULL,
    failures   integer     NOT NULL DEFAULT 0,
    last_error text,
    CONSTRAINT es_snapshot_queue_pkey PRIMARY KEY (stream_id)
);

CREATE INDEX es_snapshot_queue_due_idx ON @extschema@.es_snapshot_queue (due_at);

COMMENT ON TABLE @extschema@.es_snapshot_queue IS
    'Streams the es worker must snapshot at due_at (time-based snapshots, retries after a failure)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_snapshot_queue', '');

CREATE TRIGGER es_aggregates_wake_worker
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.es_aggregates
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_registry_changed();
-- ALWAYS: the trigger also invalidates every session's cache of the
-- registry, which must happen for rows a logical replication apply writes.
ALTER TABLE @extschema@.es_aggregates ENABLE ALWAYS TRIGGER es_aggregates_wake_worker;

-- Every es_load reads the registry (as its caller); es reads and writes
-- snapshots as the tables' owner.
GRANT SELECT ON @extschema@.es_aggregates TO PUBLIC;

-- The worker runs each apply function as the role named in owner, so a role
-- that is granted the right to register (README: delegating) may only name
-- itself: otherwise an UPDATE of owner would run its apply as another role.
ALTER TABLE @extschema@.es_aggregates ENABLE ROW LEVEL SECURITY;
CREATE POLICY es_aggregates_read ON @extschema@.es_aggregates FOR SELECT USING (true);
CREATE POLICY es_aggregates_insert ON @extschema@.es_aggregates FOR INSERT
    WITH CHECK (owner = current_user);
CREATE POLICY es_aggregates_update ON @extschema@.es_aggregates FOR UPDATE
    USING (true) WITH CHECK (owner = current_user);
CREATE POLICY es_aggregates_delete ON @extschema@.es_aggregates FOR DELETE USING (true);

CREATE FUNCTION @extschema@.es_register_aggregate(
    category text,
    apply regprocedure,
    initial_state jsonb DEFAULT '{}',
    snapshot_every integer DEFAULT 100,
    schema_version integer DEFAULT 1,
    snapshot_after interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proc record;
    signature text;
    registered record;
BEGIN
    IF es_register_aggregate.category IS NULL OR es_register_aggregate.apply IS NULL
       OR es_register_aggregate.initial_state IS NULL OR es_register_aggregate.snapshot_every IS NULL
       OR es_register_aggregate.schema_version IS NULL THEN
        RAISE EXCEPTION 'category, apply, initial_state, snapshot_every and schema_version must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF es_register_aggregate.category = '' OR pg_catalog.strpos(es_register_aggregate.category, '-') > 0 THEN
        RAISE EXCEPTION 'invalid category "%"', es_register_aggregate.category
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A category is the part of a stream id before its first "-": not empty, without "-".';
    END IF;
    IF es_register_aggregate.snapshot_every < 0 THEN
        RAISE EXCEPTION 'snapshot_every must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 0 to turn count-based snapshots off.';
    END IF;
    IF es_register_aggregate.schema_version < 1 THEN
        RAISE EXCEPTION 'schema_version must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF es_register_aggregate.snapshot_after IS NOT NULL
       AND es_register_aggregate.snapshot_after <= interval '0' THEN
        RAISE EXCEPTION 'snapshot_after must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use NULL to turn time-based snapshots off.';
    END IF;

    SELECT p.proname, n.nspname, p.pronargs, p.proargtypes, p.prorettype, p.proretset, p.prokind
      INTO proc
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.oid = es_register_aggregate.apply;
    IF NOT FOUND OR proc.prokind <> 'f' OR proc.pronargs <> 2 OR proc.proargtypes[0] <> 'jsonb'::regtype
       OR proc.proargtypes[1] <> '@extschema@.es_event'::regtype
       OR proc.prorettype <> 'jsonb'::regtype OR proc.proretset THEN
        RAISE EXCEPTION 'function % cannot be an apply function', es_register_aggregate.apply
            USING ERRCODE = 'undefined_function',
                  DETAIL = 'An apply function takes (state jsonb, event es_event) and returns jsonb (the new state), one row.';
    END IF;
    signature := pg_catalog.format('%I.%I(jsonb, %s)', proc.nspname, proc.proname,
                                   '@extschema@.es_event'::regtype);

    LOCK TABLE @extschema@.es_aggregates IN SHARE ROW EXCLUSIVE MODE;

    SELECT a.apply, a.schema_version INTO registered
      FROM @extschema@.es_aggregates a WHERE a.category = es_register_aggregate.category;
    IF FOUND THEN
        IF es_register_aggregate.schema_version < registered.schema_version THEN
            RAISE EXCEPTION 'aggregate of category "%" is registered at a higher schema version',
                    es_register_aggregate.category
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('It is at schema version %s; %s was given.',
                                                 registered.schema_version, es_register_aggregate.schema_version);
        END IF;
        IF es_register_aggregate.schema_version = registered.schema_version
           AND pg_catalog.to_regprocedure(registered.apply) IS DISTINCT FROM es_register_aggregate.apply THEN
            RAISE EXCEPTION 'aggregate of category "%" is already registered at schema version % with another apply function',
                    es_register_aggregate.category, registered.schema_version
                USING ERRCODE = 'duplicate_object',
                      DETAIL = pg_catalog.format('It is %s.', registered.apply),
                      HINT = 'Register it with a higher schema_version to replace it.';
        END IF;
        UPDATE @extschema@.es_aggregates a
           SET apply = signature,
               initial_state = es_register_aggregate.initial_state,
               snapshot_every = es_register_aggregate.snapshot_every,
               schema_version = es_register_aggregate.schema_version,
               snapshot_after = es_register_aggregate.snapshot_after,
               owner = current_user,
               registered_at = pg_catalog.now(),
               -- the new logic makes every snapshot stale: refresh from the start
               position = CASE WHEN a.schema_version = es_register_aggregate.schema_version
                               THEN a.position ELSE 0 END,
               failures = 0, retry_at = NULL, last_error = NULL
         WHERE a.category = es_register_aggregate.category;
        RETURN;
    END IF;

    INSERT INTO @extschema@.es_aggregates
        (category, apply, initial_state, snapshot_every, schema_version, snapshot_after, owner)
    VALUES (es_register_aggregate.category, signature, es_register_aggregate.initial_state,
            es_register_aggregate.snapshot_every, es_register_aggregate.schema_version,
            es_register_aggregate.snapshot_after, current_user);
END
$$;

REVOKE EXECUTE ON FUNCTION @extschema@.es_register_aggregate(text, regprocedure, jsonb, integer, integer, interval) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_register_aggregate(text, regprocedure, jsonb, integer, integer, interval) IS
    'Registers apply(jsonb, es_event) RETURNS jsonb as the aggregate of a category, with its snapshot strategy';

CREATE FUNCTION @extschema@.es_unregister_aggregate(category text)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF es_unregister_aggregate.category IS NULL THEN
        RAISE EXCEPTION 'category must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM @extschema@.es_aggregates a WHERE a.category = es_unregister_aggregate.category;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no aggregate of category "%" is registered', es_unregister_aggregate.category
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION @extschema@.es_unregister_aggregate(text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_unregister_aggregate(text) IS
    'Unregisters the aggregate of a category (its snapshots stay, and are stale)';

CREATE FUNCTION @extschema@.es_load(stream_id text, at_version bigint DEFAULT NULL)
RETURNS TABLE(state jsonb, version bigint)
AS 'MODULE_PATHNAME', 'es_load'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 1;

COMMENT ON FUNCTION @extschema@.es_load(text, bigint) IS
    'The state of a stream (at at_version; NULL: now): its aggregate''s fold, from the newest current snapshot';

CREATE FUNCTION @extschema@.es_load_at(stream_id text, at timestamptz)
RETURNS TABLE(state jsonb, version bigint)
AS 'MODULE_PATHNAME', 'es_load_at'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 1;

COMMENT ON FUNCTION @extschema@.es_load_at(text, timestamptz) IS
    'The state of a stream as of the events recorded at or before at';

CREATE FUNCTION @extschema@.es_snapshot_save(
    stream_id text,
    version bigint,
    state jsonb,
    schema_version integer DEFAULT 1)
RETURNS void
AS 'MODULE_PATHNAME', 'es_snapshot_save'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

REVOKE EXECUTE ON FUNCTION @extschema@.es_snapshot_save(text, bigint, jsonb, integer) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_snapshot_save(text, bigint, jsonb, integer) IS
    'Saves the state of a stream at a version (trusted: es_load starts from it)';

CREATE FUNCTION @extschema@.es_snapshot_load(stream_id text, only_schema_version integer DEFAULT NULL)
RETURNS TABLE(version bigint, schema_version integer, state jsonb, created_at timestamptz)
AS 'MODULE_PATHNAME', 'es_snapshot_load'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 1;

COMMENT ON FUNCTION @extschema@.es_snapshot_load(text, integer) IS
    'The newest snapshot of a stream (of one schema version, when given)';

CREATE FUNCTION @extschema@.es_snapshot_take(stream_id text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_snapshot_take'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

REVOKE EXECUTE ON FUNCTION @extschema@.es_snapshot_take(text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_snapshot_take(text) IS
    'Folds a stream now and saves the snapshot; returns its version';

/*
 * Projections
 */

-- One row per projection: a handler (event es_event) RETURNS void that
-- maintains a read model, the event types it wants (NULL: all), how it is
-- fed, and where it is.  handler, reset and owner are kept as text (a
-- schema-qualified signature, a role name) so that the registry survives
-- pg_dump/pg_restore.  position is the checkpoint of async and manual
-- projections: the global position of the last event handled or stepped
-- over; the handler's writes and the move of the checkpoint commit in one
-- transaction.  Inline projections are current by construction (they run
-- in the appending transaction); their position is where their last
-- rebuild ended.
CREATE TABLE @extschema@.es_projections (
    name             text        NOT NULL,
    handler          text        NOT NULL,
    reset            text,
    event_types      text[],
    mode             text        NOT NULL DEFAULT 'inline',
    position         bigint      NOT NULL DEFAULT 0,
    state            text        NOT NULL DEFAULT 'running',
    last_error       text,
    failing_position bigint,
    owner            text        NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT es_projections_pkey PRIMARY KEY (name),
    CONSTRAINT es_projections_mode_check CHECK (mode IN ('inline', 'async', 'manual')),
    CONSTRAINT es_projections_state_check CHECK (state IN ('running', 'failed', 'rebuilding')),
    CONSTRAINT es_projections_position_check CHECK (position >= 0)
);

COMMENT ON TABLE @extschema@.es_projections IS
    'Registered projections: handler, event types, mode and checkpoint of each read model';

-- Events a failed projection was told to step over (es_projection_skip).
CREATE TABLE @extschema@.es_projection_skipped (
    name            text        NOT NULL,
    global_position bigint      NOT NULL,
    event_id        uuid,
    error           text,
    skipped_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT es_projection_skipped_pkey PRIMARY KEY (name, global_position)
);

COMMENT ON TABLE @extschema@.es_projection_skipped IS
    'Events that projections stepped over after their handler failed on them';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_projections', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.es_projection_skipped', '');

GRANT SELECT ON @extschema@.es_projections TO PUBLIC;
GRANT SELECT ON @extschema@.es_projection_skipped TO PUBLIC;

-- The worker runs each async handler as the role named in owner, so a role
-- that is granted the right to register (README: delegating) may only name
-- itself, as in es_aggregates.
ALTER TABLE @extschema@.es_projections ENABLE ROW LEVEL SECURITY;
CREATE POLICY es_projections_read ON @extschema@.es_projections FOR SELECT USING (true);
CREATE POLICY es_projections_insert ON @extschema@.es_projections FOR INSERT
    WITH CHECK (owner = current_user);
CREATE POLICY es_projections_update ON @extschema@.es_projections FOR UPDATE
    USING (true) WITH CHECK (owner = current_user);
CREATE POLICY es_projections_delete ON @extschema@.es_projections FOR DELETE USING (true);

-- A change of what inline projections there are drops every session's
-- list of them at commit (src/projection.c); the worker's checkpoint
-- updates do not touch these columns.
CREATE FUNCTION @extschema@.es_projections_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_projections_changed'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.es_projections_changed() IS
    'Trigger function: tells every session to reload its list of inline projections';

CREATE TRIGGER es_projections_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, handler, event_types, mode
    ON @extschema@.es_projections
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_projections_changed();
ALTER TABLE @extschema@.es_projections ENABLE ALWAYS TRIGGER es_projections_changed;

CREATE TRIGGER es_projections_wake_worker
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.es_projections
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_registry_changed();

-- Inline projections: each event es_append inserts (or logical replication
-- applies) goes to the inline handlers that want its type, in the
-- appending transaction.  The WHEN clause is evaluated as the row is
-- inserted: when no inline projection wants the event (or the row comes
-- from a restore), no trigger event is even queued, so appends cost
-- nothing more without inline projections.
CREATE FUNCTION @extschema@.es_projection_wanted(event_type text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_projection_wanted'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.es_projection_wanted(text) IS
    'Whether an event of this type being inserted now goes to an inline projection (used by the es_events trigger)';

CREATE FUNCTION @extschema@.es_projection_dispatch()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_projection_dispatch'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.es_projection_dispatch() IS
    'Trigger function: hands an appended event, upcast, to the inline projections that want its type';

CREATE TRIGGER es_projection_dispatch
    AFTER INSERT ON @extschema@.es_events
    FOR EACH ROW WHEN (@extschema@.es_projection_wanted(NEW.event_type))
    EXECUTE FUNCTION @extschema@.es_projection_dispatch();
ALTER TABLE @extschema@.es_events ENABLE ALWAYS TRIGGER es_projection_dispatch;

CREATE FUNCTION @extschema@.es_register_projection(
    name text,
    handler regprocedure,
    event_types text[] DEFAULT NULL,
    mode text DEFAULT 'inline',
    reset regprocedure DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proc record;
    handler_signature text;
    reset_signature text;
BEGIN
    IF es_register_projection.name IS NULL OR es_register_projection.handler IS NULL
       OR es_register_projection.mode IS NULL THEN
        RAISE EXCEPTION 'name, handler and mode must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF es_register_projection.name = '' THEN
        RAISE EXCEPTION 'projection name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF es_register_projection.mode NOT IN ('inline', 'async', 'manual') THEN
        RAISE EXCEPTION 'unknown projection mode "%"', es_register_projection.mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The modes are inline, async and manual.';
    END IF;
    IF es_register_projection.event_types IS NOT NULL
       AND (pg_catalog.array_ndims(es_register_projection.event_types) IS DISTINCT FROM 1
            OR pg_catalog.array_position(es_register_projection.event_types, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'event_types must be a one-dimensional array of event types without NULLs'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use NULL for every event type.';
    END IF;

    SELECT p.proname, n.nspname, p.pronargs, p.proargtypes, p.prorettype, p.proretset, p.prokind
      INTO proc
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.oid = es_register_projection.handler;
    IF NOT FOUND OR proc.prokind <> 'f' OR proc.pronargs <> 1
       OR proc.proargtypes[0] <> '@extschema@.es_event'::regtype
       OR proc.prorettype <> 'void'::regtype OR proc.proretset THEN
        RAISE EXCEPTION 'function % cannot be a projection handler', es_register_projection.handler
            USING ERRCODE = 'undefined_function',
                  DETAIL = 'A handler takes one es_event argument and returns void.';
    END IF;
    handler_signature := pg_catalog.format('%I.%I(%s)', proc.nspname, proc.proname,
                                           '@extschema@.es_event'::regtype);

    IF es_register_projection.reset IS NOT NULL THEN
        SELECT p.proname, n.nspname, p.pronargs, p.prorettype, p.proretset, p.prokind
          INTO proc
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.oid = es_register_projection.reset;
        IF NOT FOUND OR proc.prokind <> 'f' OR proc.pronargs <> 0
           OR proc.prorettype <> 'void'::regtype OR proc.proretset THEN
            RAISE EXCEPTION 'function % cannot be a projection reset', es_register_projection.reset
                USING ERRCODE = 'undefined_function',
                      DETAIL = 'A reset function takes no arguments and returns void; it empties the read model.';
        END IF;
        reset_signature := pg_catalog.format('%I.%I()', proc.nspname, proc.proname);
    END IF;

    IF EXISTS (SELECT FROM @extschema@.es_projections p WHERE p.name = es_register_projection.name) THEN
        RAISE EXCEPTION 'projection "%" is already registered', es_register_projection.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Unregister it first with es_unregister_projection.';
    END IF;

    -- A new projection starts from the beginning: async and manual ones
    -- catch up from position 0; an inline one handles the events appended
    -- from now on (es_projection_rebuild replays the older ones).
    INSERT INTO @extschema@.es_projections (name, handler, reset, event_types, mode, owner)
    VALUES (es_register_projection.name, handler_signature, reset_signature,
            es_register_projection.event_types, es_register_projection.mode, current_user);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'projection "%" is already registered', es_register_projection.name
        USING ERRCODE = 'duplicate_object',
              HINT = 'Unregister it first with es_unregister_projection.';
END
$$;

REVOKE EXECUTE ON FUNCTION @extschema@.es_register_projection(text, regprocedure, text[], text, regprocedure) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_register_projection(text, regprocedure, text[], text, regprocedure) IS
    'Registers handler(es_event) RETURNS void as a projection of the given event types (NULL: all), inline, async or manual';

CREATE FUNCTION @extschema@.es_unregister_projection(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF es_unregister_projection.name IS NULL THEN
        RAISE EXCEPTION 'name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM @extschema@.es_projections p WHERE p.name = es_unregister_projection.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no projection "%" is registered', es_unregister_projection.name
            USING ERRCODE = 'undefined_object';
    END IF;
    DELETE FROM @extschema@.es_projection_skipped s WHERE s.name = es_unregister_projection.name;
END
$$;

REVOKE EXECUTE ON FUNCTION @extschema@.es_unregister_projection(text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_unregister_projection(text) IS
    'Unregisters a projection (its read model stays as it is)';

CREATE FUNCTION @extschema@.es_projection_run(name text, max_events bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_projection_run'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

REVOKE EXECUTE ON FUNCTION @extschema@.es_projection_run(text, bigint) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_projection_run(text, bigint) IS
    'Feeds an async or manual projection the events after its checkpoint in this session (at most max_events); returns how many it handled';

CREATE FUNCTION @extschema@.es_projection_rebuild(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_projection_rebuild'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

REVOKE EXECUTE ON FUNCTION @extschema@.es_projection_rebuild(text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_projection_rebuild(text) IS
    'Calls the reset function and replays every event (an async projection: in the background); returns how many were replayed';

CREATE FUNCTION @extschema@.es_projection_wait(
    name text,
    "position" bigint,
    timeout_ms integer DEFAULT 10000)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_projection_wait'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.es_projection_wait(text, bigint, integer) IS
    'Waits until a projection has handled the event at position (true) or timeout_ms pass (false)';

CREATE FUNCTION @extschema@.es_projection_resume(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF es_projection_resume.name IS NULL THEN
        RAISE EXCEPTION 'name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE @extschema@.es_projections p
       SET state = 'running', last_error = NULL, failing_position = NULL,
           updated_at = pg_catalog.now()
     WHERE p.name = es_projection_resume.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no projection "%" is registered', es_projection_resume.name
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION @extschema@.es_projection_resume(text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_projection_resume(text) IS
    'Lets a failed projection go on: its failing event is tried again';

CREATE FUNCTION @extschema@.es_projection_skip(name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    IF es_projection_skip.name IS NULL THEN
        RAISE EXCEPTION 'name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO p FROM @extschema@.es_projections pr
     WHERE pr.name = es_projection_skip.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no projection "%" is registered', es_projection_skip.name
            USING ERRCODE = 'undefined_object';
    END IF;
    IF p.state <> 'failed' OR p.failing_position IS NULL THEN
        RAISE EXCEPTION 'projection "%" has not failed', es_projection_skip.name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('It is %s at position %s.', p.state, p.position);
    END IF;
    INSERT INTO @extschema@.es_projection_skipped (name, global_position, event_id, error)
    SELECT p.name, p.failing_position,
           (SELECT e.event_id FROM @extschema@.es_events e
             WHERE e.global_position = p.failing_position),
           p.last_error
    ON CONFLICT ON CONSTRAINT es_projection_skipped_pkey DO NOTHING;
    UPDATE @extschema@.es_projections pr
       SET state = 'running', last_error = NULL, failing_position = NULL,
           position = p.failing_position, updated_at = pg_catalog.now()
     WHERE pr.name = es_projection_skip.name;
    RETURN p.failing_position;
END
$$;

REVOKE EXECUTE ON FUNCTION @extschema@.es_projection_skip(text) FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.es_projection_skip(text) IS
    'Lets a failed projection step over its failing event (recorded in es_projection_skipped); returns its position';

CREATE FUNCTION @extschema@.es_projection_head()
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_projection_head'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.es_projection_head() IS
    'The newest event readable in the gap-free global order (0: none), as es_projection_status shows it';

-- head: the newest event readable in the gap-free order.  An inline
-- projection is always at the head (it runs in the appending transaction).
CREATE VIEW @extschema@.es_projection_status AS
    SELECT p.name, p.mode,
           CASE WHEN p.mode = 'inline' THEN h.head ELSE p.position END AS position,
           h.head,
           CASE WHEN p.mode = 'inline' THEN 0
                ELSE GREATEST(h.head - p.position, 0) END AS lag,
           p.state, p.last_error, p.updated_at
      FROM @extschema@.es_projections p
     CROSS JOIN (SELECT @extschema@.es_projection_head() AS head) h;

COMMENT ON VIEW @extschema@.es_projection_status IS
    'Each projection: mode, checkpoint, head (newest readable position), lag, state and last error';

GRANT SELECT ON @extschema@.es_projection_status TO PUBLIC;
