-- es_append is transactional: several appends in one transaction commit or
-- roll back together, savepoints work, and a failed append aborts the
-- transaction like any other error.

BEGIN;
SELECT es_append('tx-1', 0, 'A', '{}');
SELECT es_append('tx-2', 0, 'A', '{}');
SELECT es_append('tx-1', 1, 'B', '{}');
ROLLBACK;
SELECT count(*) FROM es_events WHERE stream_id LIKE 'tx-%';
SELECT count(*) FROM es_streams WHERE stream_id LIKE 'tx-%';

BEGIN;
SELECT es_append('tx-1', 0, 'A', '{}');
SELECT es_append('tx-2', 0, 'A', '{}');
SELECT es_append('tx-1', 1, 'B', '{}');
COMMIT;
SELECT stream_id, version, event_type FROM es_events WHERE stream_id LIKE 'tx-%' ORDER BY global_position;

-- A savepoint rolled back takes its appends with it
BEGIN;
SELECT es_append('tx-1', 2, 'C', '{}');
SAVEPOINT s;
SELECT es_append('tx-1', 3, 'D', '{}');
ROLLBACK TO SAVEPOINT s;
SELECT es_append('tx-1', 3, 'E', '{}');
COMMIT;
SELECT version, event_type FROM es_read('tx-1');

-- A conflict inside a transaction aborts it; the earlier append is gone too
BEGIN;
SELECT es_append('tx-2', 1, 'B', '{}');
SELECT es_append('tx-1', 1, 'X', '{}');
COMMIT;
SELECT stream_id, version FROM es_streams WHERE stream_id LIKE 'tx-%' ORDER BY 1;

-- A conflict caught in a savepoint (as a retry loop in PL/pgSQL would) leaves
-- the transaction usable
DO $$
DECLARE
    v bigint;
BEGIN
    BEGIN
        PERFORM es_append('tx-2', 0, 'Again', '{}');
    EXCEPTION WHEN SQLSTATE 'SE409' THEN
        v := es_stream_version('tx-2');
        PERFORM es_append('tx-2', v, 'Retried', '{}');
    END;
END
$$;
SELECT version, event_type FROM es_read('tx-2');

-- A stream created and extended in one transaction
BEGIN;
SELECT es_append('tx-3', 0, 'A', '{}');
SELECT es_append('tx-3', 1, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]');
SELECT es_append('tx-3', NULL, 'D', '{}');
SELECT version, event_type FROM es_read('tx-3');
COMMIT;

-- Appends in REPEATABLE READ and SERIALIZABLE work like in READ COMMITTED when
-- nobody else writes the stream (the concurrent cases are isolation specs)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT es_append('tx-4', 0, 'A', '{}');
SELECT es_append('tx-4', 1, 'B', '{}');
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT es_append('tx-4', 2, 'C', '{}');
SELECT es_append('tx-4', 2, 'D', '{}');
ROLLBACK;
SELECT version, event_type FROM es_read('tx-4');

-- PREPARE TRANSACTION after an append is refused: the gap-free global
-- order must know when a transaction holding a global position ends
BEGIN;
SELECT es_append('tx-5', 0, 'A', '{}');
PREPARE TRANSACTION 'es_tx_5';
SELECT count(*) FROM es_read('tx-5');
SELECT count(*) FROM pg_prepared_xacts;
-- Transactions that only read es can be prepared
BEGIN;
SELECT es_stream_version('tx-1');
PREPARE TRANSACTION 'es_tx_6';
COMMIT PREPARED 'es_tx_6';
