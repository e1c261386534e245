-- es_read of a whole 1,000-event stream (read-1 .. read-10).
\set s random(1, 10)
SELECT * FROM es_read(concat('read-', :s::int));
