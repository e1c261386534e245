-- Baseline: the same filter as a plain SELECT in global order (no index on
-- event_type, as in es_events: it walks the primary key too).
\set p :base + random(0, 900000)
SELECT global_position, stream_id, version, event_id, event_type,
       schema_version, data, metadata, recorded_at
FROM es_events WHERE global_position > :p AND event_type = ANY (ARRAY['Rare'])
ORDER BY global_position LIMIT 100;
