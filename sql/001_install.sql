-- What CREATE EXTENSION es creates (pg_regress --load-extension=es ran it).
SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'es';

-- Storage and its columns
SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.relname IN ('es_events', 'es_streams', 'es_event') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum;

-- Unique (stream_id, version), unique event_id, primary key on global_position
SELECT conname, contype, pg_get_constraintdef(oid) AS definition
FROM pg_constraint WHERE conrelid IN ('es_events'::regclass, 'es_streams'::regclass)
ORDER BY conname;

-- Positions are never cached per backend (gap-free global order relies on it)
SELECT seqcache, seqcycle FROM pg_sequence WHERE seqrelid = 'es_events_global_position_seq'::regclass;

-- User data is kept by pg_dump
SELECT c::regclass::text AS dumped FROM pg_extension, unnest(extconfig) c WHERE extname = 'es' ORDER BY 1;

-- The immutability triggers fire always, even under session_replication_role = replica
SELECT tgrelid::regclass, tgname, tgenabled FROM pg_trigger WHERE tgrelid IN ('es_events'::regclass, 'es_streams'::regclass) ORDER BY tgname;

-- Every function: volatility, strictness, parallel safety, and a comment
SELECT p.oid::regprocedure AS function, p.provolatile, p.proisstrict, p.proparallel,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS has_comment
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'es') AND d.deptype = 'e'
ORDER BY p.oid::regprocedure::text;

-- Settings (the first call of an es function loads the library and its
-- settings, when es is not preloaded)
SELECT es_category('settings-loaded');
SHOW es.max_event_size;
SHOW es.notify;
SHOW es.notify_interval;
SHOW es.worker_naptime;
