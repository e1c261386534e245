-- Aggregates and snapshots: folds, snapshots, staleness, temporal loads, errors.
CREATE FUNCTION bank_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE e.event_type
    WHEN 'AccountOpened' THEN state || jsonb_build_object('owner', e.data->'owner', 'balance', 0, 'open', true)
    WHEN 'MoneyDeposited' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric + (e.data->>'amount')::numeric))
    WHEN 'MoneyWithdrawn' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric - (e.data->>'amount')::numeric))
    WHEN 'AccountClosed' THEN jsonb_set(state, '{open}', 'false')
    ELSE state END $$;

SELECT es_register_aggregate('account', 'bank_apply(jsonb, es_event)');
SELECT category, apply, initial_state, snapshot_every, schema_version, snapshot_after, owner = current_user AS owner_ok FROM es_aggregates;
-- automatic snapshots off (the worker would take its own): this test takes and saves them
SELECT es_register_aggregate('account', 'bank_apply(jsonb, es_event)', '{}', 0);

SELECT es_append('account-1', 0, 'AccountOpened', '{"owner": "Alice"}');
SELECT es_append('account-1', 1, 'MoneyDeposited', '{"amount": 100}');
SELECT es_append('account-1', 2, 'MoneyWithdrawn', '{"amount": 30}');
SELECT es_append('account-1', 3, 'MoneyDeposited', '{"amount": 5}');

SELECT * FROM es_load('account-1');
SELECT * FROM es_load('account-1', 2);
SELECT * FROM es_load('account-1', 0);
SELECT * FROM es_load('account-2');   -- no events yet: the initial state at version 0

-- The fold equals a reference computed in plain SQL over es_events
SELECT (SELECT (state->>'balance')::numeric FROM es_load('account-1')) =
       (SELECT sum(CASE event_type WHEN 'MoneyDeposited' THEN (data->>'amount')::numeric
                                   WHEN 'MoneyWithdrawn' THEN -(data->>'amount')::numeric ELSE 0 END)
          FROM es_events WHERE stream_id = 'account-1') AS fold_matches;

-- Snapshots: taken, used, and stale ones never used
SELECT es_snapshot_take('account-1');
SELECT version, schema_version, state FROM es_snapshot_load('account-1');
-- a forged snapshot at the current logic is trusted: es_load starts from it
SELECT es_snapshot_save('account-1', 4, '{"balance": 999, "forged": true}');
SELECT * FROM es_load('account-1');
-- a replaced apply body makes it stale at once
CREATE OR REPLACE FUNCTION bank_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE e.event_type
    WHEN 'AccountOpened' THEN state || jsonb_build_object('owner', e.data->'owner', 'balance', 0, 'open', true)
    WHEN 'MoneyDeposited' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric + (e.data->>'amount')::numeric))
    WHEN 'MoneyWithdrawn' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric - (e.data->>'amount')::numeric))
    WHEN 'AccountClosed' THEN jsonb_set(state, '{open}', 'false')
    ELSE state END || '{"v": 2}' $$;
SELECT * FROM es_load('account-1');
SELECT es_snapshot_save('account-1', 4, '{"balance": 999, "forged": true}');
SELECT * FROM es_load('account-1');
-- a new upcaster makes it stale too
CREATE FUNCTION deposit_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('amount', (data->>'amount')::numeric * 2) $$;
SELECT es_register_upcaster('MoneyDeposited', 1, 'deposit_v1_to_v2(jsonb)');
SELECT * FROM es_load('account-1');
SELECT es_unregister_upcaster('MoneyDeposited', 1);
-- a higher schema version makes it stale
SELECT es_snapshot_save('account-1', 4, '{"balance": 999, "forged": true}');
SELECT es_register_aggregate('account', 'bank_apply(jsonb, es_event)', '{}', 0, 2);
SELECT * FROM es_load('account-1');
-- a snapshot at the old schema version is not used, one at the new one is
SELECT es_snapshot_save('account-1', 2, '{"balance": 1000}', 1);
SELECT * FROM es_load('account-1');
SELECT es_snapshot_save('account-1', 2, '{"balance": 1000}', 2);
SELECT * FROM es_load('account-1');
SELECT * FROM es_load('account-1', 1);
SELECT version, schema_version FROM es_snapshot_load('account-1', 1);

-- Read-only loads
BEGIN READ ONLY;
SELECT * FROM es_load('account-1', 3);
SELECT es_test.sqlstate_of($$SELECT es_snapshot_take('account-1')$$);
ROLLBACK;

-- Temporal loads
CREATE TABLE t_marks (n int, at timestamptz);
SELECT es_append('account-3', 0, 'AccountOpened', '{"owner": "Bob"}');
INSERT INTO t_marks VALUES (1, clock_timestamp());
SELECT pg_sleep(0.01);
SELECT es_append('account-3', 1, 'MoneyDeposited', '{"amount": 10}');
SELECT pg_sleep(0.01);
INSERT INTO t_marks VALUES (2, clock_timestamp());
SELECT es_append('account-3', 2, 'MoneyWithdrawn', '{"amount": 4}');
SELECT n, l.* FROM t_marks, es_load_at('account-3', at) l ORDER BY n;
SELECT * FROM es_load_at('account-3', '2000-01-01');
SELECT * FROM es_load_at('account-3', 'infinity');

-- Re-registration rules and errors, with their SQLSTATEs
CREATE FUNCTION other_apply(state jsonb, e es_event) RETURNS jsonb LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION bad_apply(state jsonb, e jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT state $$;
SELECT s, es_test.sqlstate_of(s) FROM (VALUES
  ($$SELECT es_register_aggregate('account', 'other_apply(jsonb, es_event)', '{}', 100, 2)$$),
  ($$SELECT es_register_aggregate('account', 'other_apply(jsonb, es_event)', '{}', 100, 1)$$),
  ($$SELECT es_register_aggregate('account', 'bad_apply(jsonb, jsonb)')$$),
  ($$SELECT es_register_aggregate('x-y', 'other_apply(jsonb, es_event)')$$),
  ($$SELECT es_register_aggregate('x', 'other_apply(jsonb, es_event)', NULL)$$),
  ($$SELECT es_register_aggregate('x', 'other_apply(jsonb, es_event)', '{}', -1)$$),
  ($$SELECT es_unregister_aggregate('nope')$$),
  ($$SELECT * FROM es_load('nope-1')$$),
  ($$SELECT * FROM es_load(NULL)$$),
  ($$SELECT * FROM es_load('account-1', 99)$$),
  ($$SELECT * FROM es_load('account-1', 9223372036854775807)$$),
  ($$SELECT * FROM es_load('account-1', -1)$$),
  ($$SELECT es_snapshot_save('account-9', 1, '{}')$$),
  ($$SELECT es_snapshot_save('account-1', 99, '{}')$$),
  ($$SELECT es_snapshot_save('account-1', 0, '{}')$$),
  ($$SELECT es_snapshot_save('account-1', 1, NULL)$$),
  ($$SELECT es_snapshot_take('account-9')$$),
  ($$SELECT es_snapshot_take('nope-1')$$)
) v(s);
-- the same registration again is accepted (settings may change)
SELECT es_register_aggregate('account', 'bank_apply(jsonb, es_event)', '{}', 0, 2);
SELECT snapshot_every, schema_version FROM es_aggregates;

-- Retention: snapshots do not pile up
SELECT es_append('account-4', 0, 'AccountOpened', '{"owner": "Carol"}');
SELECT count(es_append('account-4', NULL, 'MoneyDeposited', '{"amount": 1}')) FROM generate_series(1, 40);
SELECT count(es_snapshot_save('account-4', v, '{"balance": 0}', 2)) FROM generate_series(1, 41) v;
SELECT array_agg(version ORDER BY version) FROM es_snapshots WHERE stream_id = 'account-4';

-- Privileges: registration, save and take are not for PUBLIC; apply runs as the caller
CREATE ROLE agg_reader;
GRANT SELECT ON es_events TO agg_reader;
CREATE TABLE apply_log (who text);
GRANT INSERT ON apply_log TO agg_reader;
CREATE FUNCTION logging_apply(state jsonb, e es_event) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN INSERT INTO apply_log VALUES (current_user); RETURN state; END $$;
SELECT es_register_aggregate('logged', 'logging_apply(jsonb, es_event)', '{}', 0);
SELECT es_append('logged-1', 0, 'X', '{}');
SET ROLE agg_reader;
SELECT * FROM es_load('logged-1');
SELECT es_test.sqlstate_of($$SELECT es_register_aggregate('y', 'other_apply(jsonb, es_event)')$$);
SELECT es_test.sqlstate_of($$SELECT es_snapshot_save('logged-1', 1, '{}')$$);
SELECT es_test.sqlstate_of($$SELECT es_snapshot_take('logged-1')$$);
RESET ROLE;
SELECT who FROM apply_log;
-- apply is called through fmgr: the caller's EXECUTE on it is still checked
REVOKE EXECUTE ON FUNCTION logging_apply(jsonb, es_event) FROM PUBLIC;
SET ROLE agg_reader;
SELECT es_test.sqlstate_of($$SELECT * FROM es_load('logged-1')$$);
RESET ROLE;
SELECT es_unregister_aggregate('logged');
SELECT count(*) FROM es_aggregates WHERE category = 'logged';
DROP TABLE apply_log;
REVOKE SELECT ON es_events FROM agg_reader;
DROP ROLE agg_reader;

-- The session keeps registrations and planned apply calls (a SQL apply is
-- inlined): none of that may outlive what it was made from.
CREATE SCHEMA agg_s1;
CREATE SCHEMA agg_s2;
CREATE FUNCTION agg_s1.agg_step() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
CREATE FUNCTION agg_s2.agg_step() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 10';
SET check_function_bodies = off;
CREATE FUNCTION step_apply(state jsonb, e es_event) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('n', (state->>'n')::int + agg_step()) $$;
RESET check_function_bodies;
SELECT es_register_aggregate('stepped', 'step_apply(jsonb, es_event)', '{"n": 0}', 0);
SELECT es_append('stepped-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'Step', 'data', '{}'::jsonb))
                                  FROM generate_series(1, 3)));
-- the body's names resolve with the caller's search_path, load after load
SET search_path = agg_s1, public;
SELECT state FROM es_load('stepped-1');
SET search_path = agg_s2, public;
SELECT state FROM es_load('stepped-1');
RESET search_path;
SELECT es_test.sqlstate_of($$SELECT * FROM es_load('stepped-1')$$);
-- a helper replaced: the next load uses it
SET search_path = agg_s1, public;
CREATE OR REPLACE FUNCTION agg_s1.agg_step() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 2';
SELECT state FROM es_load('stepped-1');
-- loaded (and planned) by the owner, then by a role that may not execute apply
CREATE ROLE agg_noexec;
GRANT SELECT ON es_events TO agg_noexec;
GRANT USAGE ON SCHEMA agg_s1 TO agg_noexec;
REVOKE EXECUTE ON FUNCTION step_apply(jsonb, es_event) FROM PUBLIC;
SELECT state FROM es_load('stepped-1');
SET ROLE agg_noexec;
SELECT es_test.sqlstate_of($$SELECT * FROM es_load('stepped-1')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION step_apply(jsonb, es_event) TO agg_noexec;
SET ROLE agg_noexec;
SELECT state FROM es_load('stepped-1');
RESET ROLE;
-- re-registered and unregistered within one transaction, and rolled back
BEGIN;
SELECT es_register_aggregate('stepped', 'step_apply(jsonb, es_event)', '{"n": 100}', 0, 2);
SELECT state FROM es_load('stepped-1');
SELECT es_unregister_aggregate('stepped');
SELECT es_test.sqlstate_of($$SELECT * FROM es_load('stepped-1')$$);
ROLLBACK;
SELECT state FROM es_load('stepped-1');
RESET search_path;
SELECT es_unregister_aggregate('stepped');
DROP FUNCTION step_apply(jsonb, es_event);
DROP SCHEMA agg_s1 CASCADE;
DROP SCHEMA agg_s2 CASCADE;
REVOKE SELECT ON es_events FROM agg_noexec;
DROP ROLE agg_noexec;
