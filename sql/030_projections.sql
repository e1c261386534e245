-- Projections: inline, manual and async modes, event type filters, upcast
-- events, rebuilds, failures (resume, skip), the status view, privileges,
-- and every error with its SQLSTATE.  The worker's part (async projections
-- fed in the background, es_projection_wait woken by it) is tested by
-- tests/projections.sh; here async projections are driven by
-- es_projection_run so that the output does not depend on the worker.

CREATE TABLE balances (
    stream_id text PRIMARY KEY,
    balance numeric NOT NULL,
    events int NOT NULL,
    last_position bigint NOT NULL
);

CREATE FUNCTION balance_handler(e es_event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO balances AS b
    VALUES (e.stream_id,
            CASE e.event_type WHEN 'PDeposited' THEN (e.data->>'amount')::numeric
                              ELSE -(e.data->>'amount')::numeric END,
            1, e.global_position)
    ON CONFLICT (stream_id) DO UPDATE
       SET balance = b.balance + EXCLUDED.balance,
           events = b.events + 1,
           last_position = EXCLUDED.last_position;
END
$$;

CREATE FUNCTION balance_reset() RETURNS void
LANGUAGE sql AS 'DELETE FROM balances';

-- Events appended before a projection exists: a rebuild replays them.
SELECT es_append('pacct-1', 0, 'PDeposited', '{"amount": 100}');

SELECT es_register_projection('balance', 'balance_handler(es_event)',
                              ARRAY['PDeposited', 'PWithdrawn'], 'inline', 'balance_reset()');
SELECT name, handler, reset, event_types, mode, position, state, last_error,
       owner = current_user AS owner_ok
  FROM es_projections;

-- Inline: every append of a wanted type runs the handler in its transaction.
SELECT es_append('pacct-1', 1, 'PWithdrawn', '{"amount": 30}');
SELECT es_append('pacct-2', 0, 'PDeposited', '{"amount": 7}');
SELECT es_append('pacct-2', 1, 'PNoted', '{"note": "not wanted"}');
SELECT es_append('pacct-2', 2, '[{"type": "PDeposited", "data": {"amount": 1}},
                                 {"type": "PDeposited", "data": {"amount": 2}}]');
SELECT stream_id, balance, events FROM balances ORDER BY stream_id;

-- A handler error aborts the append: nothing is stored.
SELECT es_test.sqlstate_of($$SELECT es_append('pacct-3', 0, 'PDeposited', '{"amount": "lots"}')$$);
SELECT count(*) AS stored FROM es_events WHERE stream_id = 'pacct-3';
SELECT count(*) AS modelled FROM balances WHERE stream_id = 'pacct-3';

-- Rebuild: reset, then every event again, including the one appended
-- before the projection was registered.  (Its progress NOTICEs carry
-- timings: tests/projections.sh looks at them.)
SET client_min_messages = warning;
SELECT es_projection_rebuild('balance');
RESET client_min_messages;
SELECT stream_id, balance, events FROM balances ORDER BY stream_id;
-- The rebuilt model equals one computed in plain SQL over es_events.
SELECT (SELECT jsonb_object_agg(stream_id, balance) FROM balances) =
       (SELECT jsonb_object_agg(stream_id, total) FROM (
            SELECT stream_id, sum(CASE event_type WHEN 'PDeposited' THEN (data->>'amount')::numeric
                                                  ELSE -(data->>'amount')::numeric END) AS total
              FROM es_events WHERE event_type IN ('PDeposited', 'PWithdrawn') GROUP BY stream_id) s)
       AS rebuild_matches;
SELECT name, mode, position = head AS at_head, lag, state FROM es_projection_status;

-- Handlers see events upcast: a v1 event's "amt" reads as "amount".
CREATE FUNCTION pdeposited_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT (data - 'amt') || jsonb_build_object('amount', data->'amt') $$;
SELECT es_register_upcaster('PDeposited', 1, 'pdeposited_v1_to_v2(jsonb)');
SELECT es_append('pacct-4', 0, '[{"type": "PDeposited", "data": {"amt": 40}, "schema_version": 1}]');
SELECT es_append('pacct-4', 1, 'PDeposited', '{"amount": 2}');
SELECT stream_id, balance, events FROM balances WHERE stream_id = 'pacct-4';

-- Manual: nothing happens until es_projection_run; counts are of events
-- handed to the handler.
CREATE TABLE type_counts (event_type text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_handler(e es_event) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO type_counts VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = type_counts.n + 1
$$;
CREATE FUNCTION count_reset() RETURNS void LANGUAGE sql AS 'DELETE FROM type_counts';
SELECT es_register_projection('pcounts', 'count_handler(es_event)',
                              ARRAY['PDeposited', 'PNoted'], 'manual', 'count_reset()');
SELECT count(*) AS before_run FROM type_counts;
SELECT es_projection_run('pcounts', 2);
SELECT * FROM type_counts ORDER BY event_type;
SELECT es_projection_run('pcounts');
SELECT es_projection_run('pcounts');    -- nothing new
SELECT * FROM type_counts ORDER BY event_type;
SELECT es_append('pacct-2', 4, 'PNoted', '{"note": "again"}');
SELECT es_projection_run('pcounts');
SELECT * FROM type_counts ORDER BY event_type;
SELECT es_projection_run('pcounts', 0);
SET client_min_messages = warning;
SELECT es_projection_rebuild('pcounts');
RESET client_min_messages;
SELECT * FROM type_counts ORDER BY event_type;
SELECT name, mode, lag, state FROM es_projection_status ORDER BY name;

-- A failing event stops the projection there; the events before it are
-- handled; resume retries it, skip steps over it and records it.
CREATE TABLE seen (global_position bigint PRIMARY KEY, stream_id text);
CREATE FUNCTION picky_handler(e es_event) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'poison' AND NOT EXISTS (SELECT FROM pg_class WHERE relname = 'antidote') THEN
        RAISE EXCEPTION 'cannot digest %', e.data->>'poison';
    END IF;
    INSERT INTO seen VALUES (e.global_position, e.stream_id);
END
$$;
SELECT es_register_projection('picky', 'picky_handler(es_event)', ARRAY['PMeal'], 'manual');
SELECT es_append('pmeal-1', 0, 'PMeal', '{"food": "bread"}');
SELECT es_append('pmeal-1', 1, 'PMeal', '{"food": "soup"}');
SELECT es_append('pmeal-1', 2, 'PMeal', '{"poison": "hemlock"}') AS poison_version;
SELECT es_append('pmeal-1', 3, 'PMeal', '{"food": "cake"}');
-- (the WARNINGs name global positions, which depend on the tests before)
SET client_min_messages = error;
SELECT es_projection_run('picky');
SELECT count(*) AS seen FROM seen;
SELECT p.state, p.last_error,
       p.failing_position = (SELECT global_position FROM es_events WHERE stream_id = 'pmeal-1' AND version = 3) AS fails_at_poison,
       p.position = p.failing_position - 1 AS checkpoint_before_it
  FROM es_projections p WHERE name = 'picky';
SELECT name, state, last_error FROM es_projection_status WHERE name = 'picky';
-- a failed projection is not run until resumed or skipped
SELECT es_projection_run('picky');
-- resume: the failing event is tried again (and fails again)
SELECT es_projection_resume('picky');
SELECT state FROM es_projections WHERE name = 'picky';
SELECT es_projection_run('picky');
SELECT state FROM es_projections WHERE name = 'picky';
-- skip: stepped over, recorded, and the rest goes on
SELECT es_projection_skip('picky') =
       (SELECT global_position FROM es_events WHERE stream_id = 'pmeal-1' AND version = 3) AS skipped_poison;
SELECT s.name, s.event_id = e.event_id AS event_ok, s.error
  FROM es_projection_skipped s JOIN es_events e ON e.global_position = s.global_position;
SELECT es_projection_run('picky');
SELECT count(*) AS seen, state FROM seen, es_projections WHERE name = 'picky' GROUP BY state;
SELECT split_part(es_test.sqlstate_of($$SELECT es_projection_skip('picky')$$), ' | ', 1);
-- resume after fixing the cause: the event is handled
SELECT es_append('pmeal-2', 0, 'PMeal', '{"poison": "nightshade"}');
SELECT es_projection_run('picky');
CREATE TABLE antidote ();
SELECT es_projection_resume('picky');
SELECT es_projection_run('picky');
SELECT count(*) AS seen, state FROM seen, es_projections WHERE name = 'picky' GROUP BY state;
RESET client_min_messages;

-- Async, driven from SQL here (the worker may feed it too: only the result
-- is shown).
CREATE TABLE meals (stream_id text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION meal_handler(e es_event) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO meals VALUES (e.stream_id, 1)
    ON CONFLICT (stream_id) DO UPDATE SET n = meals.n + 1
$$;
SELECT es_register_projection('meals', 'meal_handler(es_event)', ARRAY['PMeal'], 'async');
SELECT es_projection_run('meals') >= 0 AS ran;
SELECT * FROM meals ORDER BY stream_id;
SELECT es_projection_wait('meals', (SELECT max(global_position) FROM es_events), 0) AS caught_up;
SELECT name, mode, lag, state FROM es_projection_status WHERE name = 'meals';
-- inline projections are current at once
SELECT es_projection_wait('balance', 1000000, 0);
-- a position not reached yet: false after the timeout
SELECT es_projection_wait('meals', (SELECT max(global_position) FROM es_events) + 1000, 10) AS far_ahead;
SELECT es_test.sqlstate_of($$SELECT es_projection_rebuild('meals')$$);  -- no reset function

-- Unregistering leaves the read model alone; appends no longer reach it.
SELECT es_unregister_projection('balance');
SELECT es_append('pacct-2', 5, 'PDeposited', '{"amount": 1000}');
SELECT stream_id, balance FROM balances WHERE stream_id = 'pacct-2';

-- Errors
SELECT es_test.sqlstate_of(s) FROM (VALUES
    ($$SELECT es_register_projection('x', 'balance_reset()')$$),                       -- 42883 handler signature
    ($$SELECT es_register_projection('x', 'balance_handler(es_event)', NULL, 'inline', 'balance_handler(es_event)')$$), -- 42883 reset signature
    ($$SELECT es_register_projection('x', 'balance_handler(es_event)', NULL, 'sometimes')$$), -- 22023
    ($$SELECT es_register_projection('picky', 'balance_handler(es_event)')$$),         -- 42710
    ($$SELECT es_register_projection(NULL, 'balance_handler(es_event)')$$),            -- 22004
    ($$SELECT es_register_projection('', 'balance_handler(es_event)')$$),              -- 22023
    ($$SELECT es_register_projection('x', 'balance_handler(es_event)', ARRAY['a', NULL])$$), -- 22023
    ($$SELECT es_register_projection('x', 'no_such_function(es_event)')$$),            -- 42883
    ($$SELECT es_unregister_projection('nope')$$),                                     -- 42704
    ($$SELECT es_projection_run('nope')$$),                                            -- 42704
    ($$SELECT es_projection_rebuild('nope')$$),                                        -- 42704
    ($$SELECT es_projection_wait('nope', 1)$$),                                        -- 42704
    ($$SELECT es_projection_resume('nope')$$),                                         -- 42704
    ($$SELECT es_projection_skip('nope')$$),                                           -- 42704
    ($$SELECT es_projection_run(NULL)$$),                                              -- 22004
    ($$SELECT es_projection_run('meals', -1)$$),                                       -- 22023
    ($$SELECT es_projection_wait('meals', NULL)$$),                                    -- 22004
    ($$SELECT es_projection_wait('meals', 1, -5)$$)                                    -- 22023
) t(s);

-- Privileges: registering is not PUBLIC's; inline handlers run as the
-- appender, and cannot reach what the appender cannot.
CREATE ROLE es_proj_writer;
CREATE ROLE es_proj_stranger;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid) TO es_proj_writer;
CREATE TABLE handler_calls (projection text, current_role_name text, session_role_name text);
GRANT INSERT ON handler_calls TO es_proj_writer;
CREATE TABLE owner_only (x int);
CREATE FUNCTION whoami_handler(e es_event) RETURNS void
LANGUAGE sql AS $$ INSERT INTO handler_calls VALUES ('whoami', current_user, session_user) $$;
CREATE FUNCTION sneaky_handler(e es_event) RETURNS void
LANGUAGE sql AS $$ INSERT INTO owner_only VALUES (1) $$;
SELECT es_register_projection('whoami', 'whoami_handler(es_event)', ARRAY['PWho'], 'inline');
SELECT es_register_projection('sneaky', 'sneaky_handler(es_event)', ARRAY['PSneak'], 'inline');
SET SESSION AUTHORIZATION es_proj_writer;
SELECT es_append('pwho-1', 0, 'PWho', '{}');
SELECT es_test.sqlstate_of($$SELECT es_append('psneak-1', 0, 'PSneak', '{}')$$);
SELECT es_test.sqlstate_of($$SELECT es_register_projection('mine', 'balance_handler(es_event)')$$);
SELECT es_test.sqlstate_of($$SELECT es_unregister_projection('whoami')$$);
SELECT es_test.sqlstate_of($$SELECT es_projection_run('meals')$$);
SELECT es_test.sqlstate_of($$SELECT es_projection_rebuild('pcounts')$$);
SELECT es_test.sqlstate_of($$SELECT es_projection_resume('picky')$$);
SELECT es_test.sqlstate_of($$SELECT es_projection_skip('picky')$$);
SELECT es_test.sqlstate_of($$UPDATE es_projections SET owner = 'es_proj_writer'$$);
RESET SESSION AUTHORIZATION;
SELECT * FROM handler_calls;
SELECT count(*) AS sneaked FROM owner_only;
SELECT count(*) AS sneak_stored FROM es_events WHERE stream_id = 'psneak-1';

-- Delegation (README): EXECUTE on the registration functions and the
-- right to write es_projections; the owner recorded is the registrant,
-- and it cannot name another.
GRANT EXECUTE ON FUNCTION es_register_projection(text, regprocedure, text[], text, regprocedure),
                          es_unregister_projection(text) TO es_proj_stranger;
GRANT INSERT, UPDATE, DELETE ON es_projections, es_projection_skipped TO es_proj_stranger;
GRANT EXECUTE ON FUNCTION count_handler(es_event) TO es_proj_stranger;
SET SESSION AUTHORIZATION es_proj_stranger;
SELECT es_register_projection('delegated', 'count_handler(es_event)', NULL, 'manual');
SELECT owner FROM es_projections WHERE name = 'delegated';
SELECT es_test.sqlstate_of($$UPDATE es_projections SET owner = 'postgres' WHERE name = 'delegated'$$);
SELECT es_test.sqlstate_of($$INSERT INTO es_projections (name, handler, mode, owner) VALUES ('forged', 'count_handler(es_event)', 'async', 'postgres')$$);
SELECT es_unregister_projection('delegated');
RESET SESSION AUTHORIZATION;

-- Clean up what later tests must not see.
SELECT es_unregister_projection(name) FROM es_projections ORDER BY name;
DROP TABLE handler_calls, owner_only;
DROP FUNCTION whoami_handler(es_event), sneaky_handler(es_event);
REVOKE ALL ON es_projections, es_projection_skipped FROM es_proj_stranger;
REVOKE ALL ON FUNCTION es_register_projection(text, regprocedure, text[], text, regprocedure),
                       es_unregister_projection(text) FROM es_proj_stranger;
REVOKE ALL ON FUNCTION count_handler(es_event) FROM es_proj_stranger;
REVOKE ALL ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid) FROM es_proj_writer;
DROP ROLE es_proj_writer;
DROP ROLE es_proj_stranger;
