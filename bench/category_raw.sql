-- Baseline: the same 100 rows straight from es_events through the category
-- index (es_category(stream_id), global_position).  run.sh runs it with
-- plan_cache_mode = force_custom_plan, as es plans its category read: with
-- -M prepared the plan goes generic after five runs, and the generic plan
-- walks the primary key and filters by category (about 30 reads/s instead
-- of 1,000-2,000 on the sparse category; ordering by both index columns
-- does not help, the category being a parameter).
\set p :base + random(0, 900000)
SELECT global_position, stream_id, version, event_id, event_type,
       schema_version, data, metadata, recorded_at
FROM es_events WHERE es_category(stream_id) = :cat AND global_position > :p
ORDER BY global_position LIMIT 100;
