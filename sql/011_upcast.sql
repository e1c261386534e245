-- Upcasters: events stored at an old schema version are read at the newest.
-- The AccountOpened chain: v1 {name} -> v2 {owner} -> v3 adds currency "USD".

CREATE FUNCTION account_opened_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT (data - 'name') || jsonb_build_object('owner', data->'name') $$;
CREATE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN data || '{"currency": "USD"}'; END $$;

-- Events written before any upcaster existed are stored at schema version 1
SELECT es_append('up-1', 0, 'AccountOpened', '{"name": "Alice"}');
SELECT es_append('up-1', 1, 'Deposited', '{"amount": 10}');

SELECT es_register_upcaster('AccountOpened', 1, 'account_opened_v1_to_v2(jsonb)');
-- now new AccountOpened events are stored at schema version 2
SELECT es_append('up-2', 0, 'AccountOpened', '{"owner": "Bob"}');

SELECT es_register_upcaster('AccountOpened', 2, 'account_opened_v2_to_v3(jsonb)');
-- and now at 3; other types stay at 1; an explicit version is kept
SELECT es_append('up-3', 0, 'AccountOpened', '{"owner": "Carol", "currency": "EUR"}');
SELECT es_append('up-3', 1, '[{"type": "AccountOpened", "data": {"owner": "Dan", "currency": "GBP"}},
                               {"type": "Deposited", "data": {"amount": 5}},
                               {"type": "AccountOpened", "data": {"name": "Eve"}, "schema_version": 1}]');

-- Stored rows are unchanged
SELECT stream_id, version, event_type, schema_version, data FROM es_events WHERE stream_id LIKE 'up-%' ORDER BY global_position;
SELECT event_type, from_schema_version, function FROM es_upcasters ORDER BY 1, 2;

-- Every read path returns the newest schema
SELECT stream_id, version, event_type, schema_version, data FROM es_read('up-1');
SELECT stream_id, version, event_type, schema_version, data FROM es_read('up-2');
SELECT stream_id, version, event_type, schema_version, data FROM es_read('up-3');
SELECT stream_id, version, event_type, schema_version, data FROM es_read_backward('up-3');
SELECT stream_id, version, event_type, schema_version, data FROM es_read_backward('up-1', 1);

-- Re-registering the same step is a no-op
SELECT es_register_upcaster('AccountOpened', 1, 'account_opened_v1_to_v2(jsonb)');
SELECT count(*) FROM es_upcasters;

-- Registration errors, with their SQLSTATEs
CREATE FUNCTION not_an_upcaster(data text) RETURNS text LANGUAGE sql AS $$ SELECT data $$;
CREATE FUNCTION wrong_return(data jsonb) RETURNS text LANGUAGE sql AS $$ SELECT data::text $$;
CREATE FUNCTION set_returning(data jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE FUNCTION two_args(data jsonb, x int) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE FUNCTION other_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE PROCEDURE a_procedure(data jsonb) LANGUAGE sql AS $$ SELECT 1 $$;

SELECT case_name, es_test.sqlstate_of(statement) AS result FROM (VALUES
    -- 42883: no such function, or not (jsonb) RETURNS jsonb
    ('no such function',      $$SELECT es_register_upcaster('AccountOpened', 3, 'no_such_function(jsonb)')$$),
    ('takes text',            $$SELECT es_register_upcaster('AccountOpened', 3, 'not_an_upcaster(text)')$$),
    ('returns text',          $$SELECT es_register_upcaster('AccountOpened', 3, 'wrong_return(jsonb)')$$),
    ('returns a set',         $$SELECT es_register_upcaster('AccountOpened', 3, 'set_returning(jsonb)')$$),
    ('two arguments',         $$SELECT es_register_upcaster('AccountOpened', 3, 'two_args(jsonb, int)')$$),
    ('a procedure',           $$SELECT es_register_upcaster('AccountOpened', 3, 'a_procedure(jsonb)')$$),
    -- 42710: another function for a registered step
    ('replace a step',        $$SELECT es_register_upcaster('AccountOpened', 1, 'other_v1_to_v2(jsonb)')$$),
    -- 22023: a gap, a version below 1, an empty type
    ('gap after newest',      $$SELECT es_register_upcaster('AccountOpened', 4, 'other_v1_to_v2(jsonb)')$$),
    ('gap from nothing',      $$SELECT es_register_upcaster('Withdrawn', 2, 'other_v1_to_v2(jsonb)')$$),
    ('version 0',             $$SELECT es_register_upcaster('Withdrawn', 0, 'other_v1_to_v2(jsonb)')$$),
    ('empty type',            $$SELECT es_register_upcaster('', 1, 'other_v1_to_v2(jsonb)')$$),
    -- 22004: NULLs
    ('null type',             $$SELECT es_register_upcaster(NULL, 1, 'other_v1_to_v2(jsonb)')$$),
    ('null version',          $$SELECT es_register_upcaster('Withdrawn', NULL, 'other_v1_to_v2(jsonb)')$$),
    ('null function',         $$SELECT es_register_upcaster('Withdrawn', 1, NULL)$$),
    ('unregister null',       $$SELECT es_unregister_upcaster(NULL, 1)$$),
    -- 22023: unregistering anything but the newest step
    ('unregister older step', $$SELECT es_unregister_upcaster('AccountOpened', 1)$$),
    ('unregister unknown',    $$SELECT es_unregister_upcaster('AccountOpened', 3)$$),
    ('unregister no type',    $$SELECT es_unregister_upcaster('NoSuchType', 1)$$)
) AS cases(case_name, statement);
SELECT event_type, from_schema_version, function FROM es_upcasters ORDER BY 1, 2;

-- Unregistering the newest step: reads stop at schema version 2 ...
SELECT es_unregister_upcaster('AccountOpened', 2);
SELECT version, schema_version, data FROM es_read('up-1', 1, 1);
-- ... and registering it again brings version 3 back
SELECT es_register_upcaster('AccountOpened', 2, 'account_opened_v2_to_v3(jsonb)');
SELECT version, schema_version, data FROM es_read('up-1', 1, 1);

-- A replaced function body is used by the next read
CREATE OR REPLACE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN data || '{"currency": "CAD"}'; END $$;
SELECT version, schema_version, data FROM es_read('up-1', 1, 1);
CREATE OR REPLACE FUNCTION account_opened_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT (data - 'name') || jsonb_build_object('owner', upper(data->>'name')) $$;
SELECT version, schema_version, data FROM es_read('up-1', 1, 1);

-- Failures are loud: the error names the event and the function
CREATE OR REPLACE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RAISE EXCEPTION 'no currency for %', data->>'owner'; END $$;
SELECT version, data FROM es_read('up-1');
CREATE OR REPLACE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT NULL::jsonb $$;
SELECT version, data FROM es_read('up-2');
CREATE OR REPLACE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT '[1, 2]'::jsonb $$;
SELECT version, data FROM es_read_backward('up-1');
-- events of other types still read fine
SELECT version, event_type, data FROM es_read('up-1', 2);
CREATE OR REPLACE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN data || '{"currency": "USD"}'; END $$;

-- A dropped upcaster fails reads of its type until the step is registered again
DROP FUNCTION account_opened_v2_to_v3(jsonb);
SELECT version, data FROM es_read('up-1');
CREATE FUNCTION account_opened_v2_to_v3(data jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN data || '{"currency": "USD"}'; END $$;
SELECT version, schema_version, data FROM es_read('up-1');

-- Upcasters in another schema, called under a hostile search_path
CREATE SCHEMA upcasting;
CREATE FUNCTION upcasting.withdrawn_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT data || '{"v2": true}' $$;
SELECT es_append('up-4', 0, 'Withdrawn', '{"amount": 1}');
SELECT es_register_upcaster('Withdrawn', 1, 'upcasting.withdrawn_v1_to_v2(jsonb)');
SELECT function FROM es_upcasters WHERE event_type = 'Withdrawn';
SET search_path = pg_catalog;
SELECT version, schema_version, data FROM public.es_read('up-4');
RESET search_path;

-- An upcaster that reads events itself (nested reads, nested upcasting) works
CREATE FUNCTION deposited_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT data || jsonb_build_object('owners', (SELECT jsonb_agg(e.data->'owner' ORDER BY e.version) FROM es_read('up-2') e
                                                 WHERE e.event_type = 'AccountOpened'))
$$;
SELECT es_register_upcaster('Deposited', 1, 'deposited_v1_to_v2(jsonb)');
SELECT version, event_type, schema_version, data FROM es_read('up-1');
SELECT es_unregister_upcaster('Deposited', 1);
