-- A hostile search_path can neither break nor hijack es: objects with our
-- names, and operators and functions that shadow the built-ins, in a schema
-- ahead of ours and ahead of pg_catalog.
CREATE SCHEMA evil;
CREATE TABLE evil.es_events (LIKE public.es_events);
CREATE TABLE evil.es_streams (LIKE public.es_streams);
CREATE SEQUENCE evil.es_events_global_position_seq START 1000000;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '1999-01-01'::timestamptz $$;
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS $$ SELECT NULL $$;
CREATE FUNCTION evil.always_true(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always_true);
CREATE FUNCTION evil.always_true(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.always_true);
CREATE OPERATOR evil.>= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.always_true);
CREATE FUNCTION evil.minus(bigint, bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;
CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.minus);

SELECT es_append('sp-1', 0, 'Before', '{}');

-- A new session, so that every plan is prepared under the hostile path
\c
SET search_path = evil, pg_catalog, public;
SELECT public.es_append('sp-1', 1, 'Hostile', '{}');
SELECT public.es_append('sp-1', NULL, 'Hostile', '{}');
SELECT public.es_append('sp-1', -1, '[{"type": "Hostile", "data": {}}, {"type": "Hostile", "data": {}}]');
SELECT public.es_append('sp-2', 0, 'Hostile', '{}', NULL, '60000000-0000-4000-8000-000000000001');
SELECT public.es_append('sp-2', 0, 'Hostile', '{}', NULL, '60000000-0000-4000-8000-000000000001') AS retry;
SELECT public.es_append('sp-1', 1, 'Hostile', '{}');
SELECT version, event_type FROM public.es_read('sp-1');
SELECT version FROM public.es_read('sp-1', 3, 1);
SELECT version FROM public.es_read_backward('sp-1', 2);
SELECT public.es_stream_version('sp-1'), public.es_stream_version('sp-2'), public.es_stream_version('nope');
RESET search_path;

-- Everything went to our tables, stamped with the real now()
SELECT count(*) AS hijacked FROM evil.es_events;
SELECT count(*) AS hijacked FROM evil.es_streams;
SELECT stream_id, version, updated_at > '2000-01-01' AS real_time FROM es_streams WHERE stream_id LIKE 'sp-%' ORDER BY 1;
SELECT stream_id, version, event_type, recorded_at > '2000-01-01' AS real_time FROM es_events
WHERE stream_id LIKE 'sp-%' ORDER BY global_position;

-- With an empty search_path too
SET search_path = '';
SELECT public.es_append('sp-3', 0, 'Empty', '{}');
SELECT count(*) FROM public.es_read('sp-3');
RESET search_path;

DROP SCHEMA evil CASCADE;
