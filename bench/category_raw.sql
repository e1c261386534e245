-- Baseline: the same 100 rows straight from es_events through the category
-- index (es_category(stream_id), global_position), as a user would write
-- it.  run.sh runs it with plan_cache_mode = force_custom_plan, its best
-- case: with -M prepared the plan goes generic after five runs, and the
-- generic plan of this query walks the primary key and filters by category
-- (about 30 reads/s instead of 1,000-2,000 on the sparse category; ordering
-- by both index columns does not help, the category being equal to a
-- parameter).  es's own statement is written as a range of the index's
-- keys, whose generic plan is right for every category (src/read.c).
\set p :base + random(0, 900000)
SELECT global_position, stream_id, version, event_id, event_type,
       schema_version, data, metadata, recorded_at
FROM es_events WHERE es_category(stream_id) = :cat AND global_position > :p
ORDER BY global_position LIMIT 100;
