-- User code never runs with more rights through es: upcasters run as the
-- reader, apply functions as the caller of es_load / es_load_at /
-- es_snapshot_take, never as the tables' owner (the superuser running this
-- test); a SECURITY DEFINER function keeps its own semantics.  Registration
-- is delegated with exactly README's grants, and a delegate cannot name
-- another role as the owner of an aggregate.
CREATE ROLE es_uc_reader;
CREATE ROLE es_uc_writer;
CREATE ROLE es_uc_definer;
CREATE ROLE es_uc_delegate;
GRANT SELECT ON es_events, es_streams TO es_uc_reader, es_uc_writer;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid),
                          es_append(text, bigint, jsonb),
                          es_snapshot_take(text) TO es_uc_writer;

CREATE SCHEMA uc;
GRANT USAGE ON SCHEMA uc TO PUBLIC;
-- what user code saw; anyone may write it
CREATE TABLE uc.seen (n serial, what text, cur name, sess name);
GRANT INSERT, SELECT ON uc.seen TO PUBLIC;
GRANT USAGE ON SEQUENCE uc.seen_n_seq TO PUBLIC;
-- only the owner (superuser) may write this one
CREATE TABLE uc.owner_only (what text);

CREATE FUNCTION uc.record_up(data jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO uc.seen (what, cur, sess) VALUES ('upcast ' || (data->>'n'), current_user, session_user);
    RETURN data || '{"upcast": true}';
END $$;
CREATE FUNCTION uc.definer_up(data jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO uc.seen (what, cur, sess) VALUES ('definer upcast', current_user, session_user);
    RETURN data;
END $$;
ALTER FUNCTION uc.definer_up(jsonb) OWNER TO es_uc_definer;
-- in a schema the reader cannot look into: calling it needs only EXECUTE
CREATE SCHEMA uc_private;
CREATE FUNCTION uc_private.private_up(data jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT data || '{"private": true}' $$;
CREATE FUNCTION uc.evil_up(data jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO uc.owner_only VALUES ('upcast by ' || current_user);
    RETURN data;
END $$;
CREATE FUNCTION uc.record_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO uc.seen (what, cur, sess) VALUES ('apply ' || e.version, current_user, session_user);
    RETURN state || jsonb_build_object('v', e.version);
END $$;
CREATE FUNCTION uc.evil_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO uc.owner_only VALUES ('apply by ' || current_user);
    RETURN state;
END $$;

-- Events stored at schema version 1, then upcasters for them.
SELECT es_append('ucup-1', 0, '[{"type": "UcRecorded", "data": {"n": 1}},
                                {"type": "UcDefiner", "data": {"n": 2}},
                                {"type": "UcRecorded", "data": {"n": 3}}]');
SELECT es_append('ucevil-1', 0, 'UcEvil', '{}');
SELECT es_append('ucup-2', 0, 'UcPrivate', '{}');
SELECT es_append('ucapply-1', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}}]');
SELECT es_append('ucbad-1', 0, 'A', '{}');
SELECT es_register_upcaster('UcRecorded', 1, 'uc.record_up(jsonb)');
SELECT es_register_upcaster('UcDefiner', 1, 'uc.definer_up(jsonb)');
SELECT es_register_upcaster('UcEvil', 1, 'uc.evil_up(jsonb)');
SELECT es_register_upcaster('UcPrivate', 1, 'uc_private.private_up(jsonb)');
-- (0: no automatic snapshots; the worker's runs are tested in tests/snapshots.sh)
SELECT es_register_aggregate('ucapply', 'uc.record_apply(jsonb, es_event)', '{}', 0);
SELECT es_register_aggregate('ucbad', 'uc.evil_apply(jsonb, es_event)', '{}', 0);

-- Upcasters see the reader, on every read path; the SECURITY DEFINER one
-- sees its definer.
-- (The first read after the registrations loads the registry, as the
-- reader: it must not need USAGE on uc_private.)
SET SESSION AUTHORIZATION es_uc_reader;
SELECT version, event_type, data FROM es_read('ucup-2');
SELECT version, event_type, data FROM es_read('ucup-1');
SELECT version FROM es_read_backward('ucup-1', NULL, 1);
SELECT count(*) FROM es_read_all(0, NULL, ARRAY['UcRecorded']);
SELECT count(*) FROM es_read_category('ucup');
RESET SESSION AUTHORIZATION;
SELECT what, cur, sess FROM uc.seen ORDER BY n;
TRUNCATE uc.seen;

-- With SET ROLE too, the upcaster runs as the current role.
SET ROLE es_uc_reader;
SELECT count(*) FROM es_read('ucup-1');
RESET ROLE;
SELECT what, cur, sess = session_user AS sess_is_the_session FROM uc.seen ORDER BY n;
TRUNCATE uc.seen;

-- An upcaster is called through fmgr: the reader's EXECUTE on it is checked
-- as a query would (a SECURITY DEFINER upcaster must not be a way around
-- it).
REVOKE EXECUTE ON FUNCTION uc.definer_up(jsonb) FROM PUBLIC;
SET SESSION AUTHORIZATION es_uc_reader;
SELECT es_test.sqlstate_of($$SELECT count(*) FROM es_read('ucup-1')$$) AS revoked;
SELECT es_test.sqlstate_of($$SELECT count(*) FROM es_read_category('ucup')$$) AS revoked_category;
RESET SESSION AUTHORIZATION;
GRANT EXECUTE ON FUNCTION uc.definer_up(jsonb) TO es_uc_reader;
SET SESSION AUTHORIZATION es_uc_reader;
SELECT count(*) AS granted FROM es_read('ucup-1');
RESET SESSION AUTHORIZATION;
GRANT EXECUTE ON FUNCTION uc.definer_up(jsonb) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION uc.definer_up(jsonb) FROM es_uc_reader;
TRUNCATE uc.seen;

-- Apply functions see the caller of es_load, es_load_at and es_snapshot_take.
SET SESSION AUTHORIZATION es_uc_reader;
SELECT state, version FROM es_load('ucapply-1');
SELECT state, version FROM es_load('ucapply-1', 1);
SELECT state, version FROM es_load_at('ucapply-1', now());
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION es_uc_writer;
SELECT es_snapshot_take('ucapply-1');
RESET SESSION AUTHORIZATION;
SELECT what, cur, sess FROM uc.seen ORDER BY n;
TRUNCATE uc.seen;

-- User code that writes what only the owner may write fails with 42501 when
-- an unprivileged role triggers it, and writes nothing.
SELECT count(*) AS snapshots_before FROM es_snapshots;
SET SESSION AUTHORIZATION es_uc_reader;
SELECT es_test.sqlstate_of($$SELECT count(*) FROM es_read('ucevil-1')$$) AS evil_upcast;
SELECT es_test.sqlstate_of($$SELECT count(*) FROM es_read_category('ucevil')$$) AS evil_upcast_category;
SELECT es_test.sqlstate_of($$SELECT * FROM es_load('ucbad-1')$$) AS evil_apply;
SELECT es_test.sqlstate_of($$SELECT * FROM es_load_at('ucbad-1', now())$$) AS evil_apply_at;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION es_uc_writer;
SELECT es_test.sqlstate_of($$SELECT es_snapshot_take('ucbad-1')$$) AS evil_take;
-- the writer's own append of an evil-upcast type runs no user code
SELECT es_append('ucevil-1', 1, 'UcEvil', '{}');
RESET SESSION AUTHORIZATION;
-- ... unless an inline projection wants the type and the writer stores the
-- event at the old schema version: then it is upcast for the handler, as
-- the writer, and the evil upcaster's write fails.
CREATE FUNCTION uc.seen_handler(e es_event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO uc.seen (what, cur, sess)
    VALUES ('handled ' || e.event_type || ' upcast=' || coalesce(e.data->>'upcast', 'no'),
            current_user, session_user);
END $$;
SELECT es_register_projection('uc_inline', 'uc.seen_handler(es_event)', ARRAY['UcRecorded', 'UcEvil']);
SET SESSION AUTHORIZATION es_uc_writer;
SELECT es_append('ucup-3', 0, '[{"type": "UcRecorded", "data": {"n": 4}, "schema_version": 1}]');
SELECT es_test.sqlstate_of($$SELECT es_append('ucevil-1', 2, '[{"type": "UcEvil", "data": {}, "schema_version": 1}]')$$) AS evil_upcast_inline;
RESET SESSION AUTHORIZATION;
SELECT what, cur, sess FROM uc.seen ORDER BY n;
SELECT es_unregister_projection('uc_inline');
TRUNCATE uc.seen;
SELECT count(*) AS owner_only_rows FROM uc.owner_only;
SELECT count(*) AS snapshots_after FROM es_snapshots;
-- The same statements as the owner do write: the 42501s above were the
-- callers' lack of rights.
BEGIN;
SELECT count(*) FROM es_read('ucevil-1');
SELECT es_snapshot_take('ucbad-1');
SELECT replace(what, current_user, '(owner)') FROM uc.owner_only ORDER BY 1;
ROLLBACK;

-- Delegation.  A role without grants can neither register nor unregister.
SET SESSION AUTHORIZATION es_uc_delegate;
SELECT es_test.sqlstate_of($$SELECT es_register_aggregate('ucdel', 'uc.record_apply(jsonb, es_event)')$$) AS register_aggregate;
SELECT es_test.sqlstate_of($$SELECT es_unregister_aggregate('ucapply')$$) AS unregister_aggregate;
SELECT es_test.sqlstate_of($$SELECT es_register_upcaster('UcDelegated', 1, 'uc.record_up(jsonb)')$$) AS register_upcaster;
SELECT es_test.sqlstate_of($$SELECT es_unregister_upcaster('UcRecorded', 1)$$) AS unregister_upcaster;
RESET SESSION AUTHORIZATION;

-- With exactly README's grants ("Privileges", the schema owner) it can.
GRANT EXECUTE ON FUNCTION es_register_upcaster(text, integer, regprocedure),
                          es_unregister_upcaster(text, integer) TO es_uc_delegate;
GRANT SELECT, INSERT, DELETE ON es_upcasters TO es_uc_delegate;
GRANT EXECUTE ON FUNCTION es_register_aggregate(text, regprocedure, jsonb, integer, integer, interval),
                          es_unregister_aggregate(text) TO es_uc_delegate;
GRANT SELECT, INSERT, UPDATE, DELETE ON es_aggregates TO es_uc_delegate;
SET SESSION AUTHORIZATION es_uc_delegate;
SELECT es_register_aggregate('ucdel', 'uc.record_apply(jsonb, es_event)');
SELECT es_register_aggregate('ucdel', 'uc.record_apply(jsonb, es_event)', '{}', 7);
SELECT category, owner, snapshot_every FROM es_aggregates WHERE category = 'ucdel';
SELECT es_register_upcaster('UcDelegated', 1, 'uc.record_up(jsonb)');
SELECT es_unregister_upcaster('UcDelegated', 1);
-- ... but cannot make an aggregate run as another role (row-level security)
SELECT es_test.sqlstate_of(format('UPDATE es_aggregates SET owner = %L WHERE category = %L',
                                  (SELECT rolname FROM pg_roles WHERE oid = 10), 'ucdel')) AS update_owner;
SELECT es_test.sqlstate_of($$UPDATE es_aggregates SET owner = 'es_uc_definer' WHERE category = 'ucdel'$$) AS update_owner_role;
SELECT es_test.sqlstate_of($$UPDATE es_aggregates SET snapshot_every = 5 WHERE category = 'ucapply'$$) AS update_others;
SELECT es_test.sqlstate_of(format('INSERT INTO es_aggregates (category, apply, owner) VALUES (%L, %L, %L)',
                                  'ucforged', 'uc.record_apply(jsonb, es_event)',
                                  (SELECT rolname FROM pg_roles WHERE oid = 10))) AS insert_other_owner;
-- its own rows it may change; they stay its own
SELECT es_test.sqlstate_of($$UPDATE es_aggregates SET snapshot_every = 9 WHERE category = 'ucdel'$$) AS update_own;
RESET SESSION AUTHORIZATION;
SELECT category, CASE WHEN owner = current_user THEN '(owner)' ELSE owner END AS owner, snapshot_every
  FROM es_aggregates WHERE category LIKE 'uc%' ORDER BY 1;

-- The delegate's aggregate still runs as whoever loads it.
SELECT es_append('ucdel-1', 0, 'A', '{}');
SET SESSION AUTHORIZATION es_uc_reader;
SELECT state, version FROM es_load('ucdel-1');
RESET SESSION AUTHORIZATION;
SELECT what, cur, sess FROM uc.seen ORDER BY n;
SET SESSION AUTHORIZATION es_uc_delegate;
SELECT es_unregister_aggregate('ucdel');
RESET SESSION AUTHORIZATION;

-- Clean up (the events stay: they are immutable).
SELECT es_unregister_aggregate('ucapply');
SELECT es_unregister_aggregate('ucbad');
SELECT es_unregister_upcaster('UcRecorded', 1);
SELECT es_unregister_upcaster('UcDefiner', 1);
SELECT es_unregister_upcaster('UcEvil', 1);
SELECT es_unregister_upcaster('UcPrivate', 1);
REVOKE ALL ON es_upcasters, es_aggregates FROM es_uc_delegate;
REVOKE EXECUTE ON FUNCTION es_register_upcaster(text, integer, regprocedure),
                           es_unregister_upcaster(text, integer),
                           es_register_aggregate(text, regprocedure, jsonb, integer, integer, interval),
                           es_unregister_aggregate(text) FROM es_uc_delegate;
REVOKE EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid),
                           es_append(text, bigint, jsonb),
                           es_snapshot_take(text) FROM es_uc_writer;
REVOKE ALL ON es_events, es_streams FROM es_uc_reader, es_uc_writer;
DROP SCHEMA uc CASCADE;
DROP SCHEMA uc_private CASCADE;
DROP ROLE es_uc_reader;
DROP ROLE es_uc_writer;
DROP ROLE es_uc_definer;
DROP ROLE es_uc_delegate;
