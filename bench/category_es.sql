-- es_read_category of 100 events from a random position of the 1M-event
-- category store (-D cat=sparse|dense; :base = the position before the load).
\set p :base + random(0, 900000)
SELECT * FROM es_read_category(:cat, :p, 100);
