-- Baseline: the same 100 rows straight from es_events through the category
-- index (es_category(stream_id), global_position).  Ordered by both index
-- columns (the same order, the category being fixed): with -M prepared the
-- plan goes generic after five runs, and the generic plan of ORDER BY
-- global_position alone walks the primary key and filters by category --
-- 28 reads/s instead of ~2,000 on the sparse category.
\set p :base + random(0, 900000)
SELECT global_position, stream_id, version, event_id, event_type,
       schema_version, data, metadata, recorded_at
FROM es_events WHERE es_category(stream_id) = :cat AND global_position > :p
ORDER BY es_category(stream_id), global_position LIMIT 100;
