-- es_read_all with an event_types filter matching 1 event in 1,000 (the
-- 'Rare' events of the sparse category): 100 of them from a random position.
\set p :base + random(0, 900000)
SELECT * FROM es_read_all(:p, 100, ARRAY['Rare']);
