-- es functions run with the caller's privileges; the grants README.md
-- documents are exactly what readers and writers need.
CREATE ROLE es_reader;
CREATE ROLE es_writer;
CREATE ROLE es_nobody;
GRANT SELECT ON es_events, es_streams TO es_reader;
GRANT SELECT, INSERT ON es_events TO es_writer;
GRANT SELECT, INSERT, UPDATE ON es_streams TO es_writer;

SET ROLE es_writer;
SELECT es_append('priv-1', 0, 'A', '{}');
SELECT es_append('priv-1', 1, 'B', '{}', NULL, '70000000-0000-4000-8000-000000000001');
SELECT es_append('priv-1', 1, 'B', '{}', NULL, '70000000-0000-4000-8000-000000000001') AS retry;
SELECT es_append('priv-1', NULL, '[{"type": "C", "data": {}}, {"type": "D", "data": {}}]');
SELECT es_append('priv-1', -1, 'E', '{}');
SELECT es_append('priv-1', 1, 'X', '{}');
SELECT version, event_type FROM es_read('priv-1');
RESET ROLE;

SET ROLE es_reader;
SELECT version, event_type FROM es_read_backward('priv-1', NULL, 2);
SELECT es_stream_version('priv-1');
SELECT es_append('priv-1', 5, 'F', '{}');
RESET ROLE;

SET ROLE es_nobody;
SELECT es_append('priv-2', 0, 'A', '{}');
SELECT count(*) FROM es_read('priv-1');
SELECT es_stream_version('priv-1');
-- es_category touches no table
SELECT es_category('priv-1');
RESET ROLE;

SELECT stream_id, version FROM es_streams WHERE stream_id LIKE 'priv-%';

REVOKE ALL ON es_events, es_streams FROM es_reader, es_writer;
DROP ROLE es_reader;
DROP ROLE es_writer;
DROP ROLE es_nobody;
