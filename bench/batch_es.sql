-- es_append of a batch: :batch is a JSON array of 100 events (built by
-- run.sh, sent as one parameter), appended to one of the client's :streams streams.
\set s random(1, :streams)
SELECT es_append(concat('batch-', :run::int, '-', :client_id::int, '-', :s::int), NULL, :batch::jsonb);
