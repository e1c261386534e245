-- Baseline: the same 100 rows straight from es_events through the category
-- index (es_category(stream_id), global_position).
\set p :base + random(0, 900000)
SELECT global_position, stream_id, version, event_id, event_type,
       schema_version, data, metadata, recorded_at
FROM es_events WHERE es_category(stream_id) = :cat AND global_position > :p
ORDER BY global_position LIMIT 100;
