-- Baseline: the same rows straight from es_events, through the same
-- (stream_id, version) index, in version order.
\set s random(1, 10)
SELECT global_position, stream_id, version, event_id, event_type,
       schema_version, data, metadata, recorded_at
FROM es_events WHERE stream_id = concat('read-', :s::int) ORDER BY version;
