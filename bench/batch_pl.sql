-- Baseline: the PL/pgSQL store's batch form, same 100-event parameter.
\set s random(1, :streams)
SELECT pl_append(concat('batch-', :run::int, '-', :client_id::int, '-', :s::int), NULL, :batch::jsonb);
