-- The es demo: a bank account, event-sourced inside PostgreSQL.
-- Run by tests/demo.sh on a throwaway cluster; safe to read top to bottom.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = notice;

\echo
\echo '== 1. Install the extension'
CREATE EXTENSION es;
SELECT extname, extversion FROM pg_extension WHERE extname = 'es';

\echo '== 2. Open Alice''s account with 100 (expected version 0: the stream must be new)'
SELECT es_append('account-alice', 0, 'AccountOpened',
                 '{"owner": "Alice", "initial_balance": 100}') AS new_version;

\echo '== 3. Deposit 50, then withdraw 30 (each append names the version it decided on)'
SELECT es_append('account-alice', 1, 'Deposited', '{"amount": 50}') AS new_version;
SELECT es_append('account-alice', 2, 'Withdrawn', '{"amount": 30}',
                 '{"teller": "ATM 7"}') AS new_version;

\echo '== 4. The stream, as stored'
SELECT version, event_type, data, metadata FROM es_read('account-alice');

\echo '== 5. Replay the stream: the balance is a left fold over the events'
SELECT sum(CASE event_type
             WHEN 'AccountOpened' THEN (data->>'initial_balance')::numeric
             WHEN 'Deposited'     THEN (data->>'amount')::numeric
             WHEN 'Withdrawn'     THEN -(data->>'amount')::numeric
           END) AS balance,
       max(version) AS at_version
FROM es_read('account-alice');

\echo '== 6. Two writers: Bob''s app read version 3 and decided on a withdrawal of 80;'
\echo '      meanwhile Carol''s app appends a withdrawal of 50 at version 3.'
SELECT es_append('account-alice', 3, 'Withdrawn', '{"amount": 50, "by": "Carol"}') AS carol_new_version;

\echo '   Bob appends with his stale expected version 3:'
DO $$
DECLARE
    detail text;
BEGIN
    PERFORM es_append('account-alice', 3, 'Withdrawn', '{"amount": 80, "by": "Bob"}');
    RAISE EXCEPTION 'demo broken: a stale append succeeded';
EXCEPTION WHEN SQLSTATE 'SE409' THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'Bob gets SQLSTATE SE409: % (%)', SQLERRM, detail;
END
$$;

\echo '   Bob re-reads (balance 70 at version 4), decides again (70 >= 60 is fine), appends at 4:'
SELECT es_stream_version('account-alice') AS current_version;
SELECT es_append('account-alice', 4, 'Withdrawn', '{"amount": 60, "by": "Bob"}') AS bob_new_version;

\echo '== 7. Stored events are immutable: rewriting history is refused (SQLSTATE SE405)'
DO $$
BEGIN
    UPDATE es_events SET data = '{"amount": 1000000}' WHERE stream_id = 'account-alice' AND version = 2;
    RAISE EXCEPTION 'demo broken: an event was updated';
EXCEPTION WHEN SQLSTATE 'SE405' THEN
    RAISE NOTICE 'UPDATE refused, SQLSTATE SE405: %', SQLERRM;
END
$$;

\echo '== 8. A retry with the same event id is idempotent: same answer, nothing written twice'
SELECT es_append('account-alice', 5, 'Deposited', '{"amount": 10}', NULL,
                 '6f1c2a4e-0000-4000-8000-000000000001') AS first_call,
       es_append('account-alice', 5, 'Deposited', '{"amount": 10}', NULL,
                 '6f1c2a4e-0000-4000-8000-000000000001') AS retry;

\echo '== 9. Final state'
SELECT version, event_type, data->>'amount' AS amount, data->>'by' AS by
FROM es_read('account-alice');
SELECT sum(CASE event_type
             WHEN 'AccountOpened' THEN (data->>'initial_balance')::numeric
             WHEN 'Deposited'     THEN (data->>'amount')::numeric
             WHEN 'Withdrawn'     THEN -(data->>'amount')::numeric
           END) AS balance
FROM es_read('account-alice');
SELECT stream_id, version FROM es_streams;

\echo '== 10. Schemas evolve, stored events do not: an upcaster'
\echo '       AccountOpened v2 calls the field opening_balance and adds a currency.'
CREATE FUNCTION account_opened_v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT (data - 'initial_balance')
           || jsonb_build_object('opening_balance', data->'initial_balance', 'currency', 'USD')
$$;
SELECT 'AccountOpened 1 -> 2' AS registered_upcaster
FROM es_register_upcaster('AccountOpened', 1, 'account_opened_v1_to_v2(jsonb)');

\echo '   Reads now return version 2 ...'
SELECT version, event_type, schema_version, data FROM es_read('account-alice', 1, 1);
\echo '   ... while the stored event is untouched:'
SELECT version, event_type, schema_version, data FROM es_events
WHERE stream_id = 'account-alice' AND version = 1;
\echo '   New AccountOpened events are stored at schema version 2 directly:'
SELECT es_append('account-bob', 0, 'AccountOpened',
                 '{"owner": "Bob", "opening_balance": 10, "currency": "EUR"}') AS new_version;
SELECT stream_id, version, schema_version, data FROM es_events WHERE stream_id = 'account-bob';

\echo '== Aggregates: Alice''s account as a left fold of her events'
CREATE FUNCTION account_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE e.event_type
        WHEN 'AccountOpened' THEN jsonb_build_object('owner', e.data->'owner',
                                                     'balance', e.data->'opening_balance', 'open', true)
        WHEN 'Deposited' THEN jsonb_set(state, '{balance}',
                                        to_jsonb((state->>'balance')::numeric + (e.data->>'amount')::numeric))
        WHEN 'Withdrawn' THEN jsonb_set(state, '{balance}',
                                        to_jsonb((state->>'balance')::numeric - (e.data->>'amount')::numeric))
        WHEN 'AccountClosed' THEN jsonb_set(state, '{open}', 'false')
        ELSE state END
$$;
SELECT 'account' AS registered_aggregate
FROM es_register_aggregate('account', 'account_apply(jsonb, es_event)');
SELECT * FROM es_load('account-alice');
\echo '   What was her balance before the first withdrawal?'
SELECT state->'balance' AS balance_before_withdrawal, version
FROM es_load_at('account-alice',
                (SELECT recorded_at - interval '1 microsecond' FROM es_events
                 WHERE stream_id = 'account-alice' AND event_type = 'Withdrawn'
                 ORDER BY version LIMIT 1));
\echo '   A snapshot, and es_load starts from it:'
SELECT es_snapshot_take('account-alice') AS snapshot_version;
SELECT * FROM es_load('account-alice');

\echo '== Projections: read models kept by the database'
\echo '   AccountBalance, inline: updated inside every append''s transaction.'
CREATE TABLE account_balance (account text PRIMARY KEY, balance numeric NOT NULL);
CREATE FUNCTION account_balance_handler(e es_event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO account_balance VALUES (e.stream_id,
        CASE e.event_type WHEN 'AccountOpened' THEN (e.data->>'opening_balance')::numeric
                          WHEN 'Deposited'     THEN (e.data->>'amount')::numeric
                          WHEN 'Withdrawn'     THEN -(e.data->>'amount')::numeric END)
    ON CONFLICT (account) DO UPDATE SET balance = account_balance.balance + EXCLUDED.balance
$$;
CREATE FUNCTION account_balance_reset() RETURNS void LANGUAGE sql AS 'DELETE FROM account_balance';
SELECT 'AccountBalance' AS registered_projection
FROM es_register_projection('AccountBalance', 'account_balance_handler(es_event)',
                            ARRAY['AccountOpened', 'Deposited', 'Withdrawn'], 'inline',
                            'account_balance_reset()');
\echo '   It starts with the events appended from now on; a rebuild replays the older ones:'
SELECT es_projection_rebuild('AccountBalance') AS events_replayed;
SELECT * FROM account_balance ORDER BY account;
SELECT es_append('account-alice', 6, 'Deposited', '{"amount": 25}') AS new_version;
\echo '   Already current when the append returns:'
SELECT * FROM account_balance WHERE account = 'account-alice';

\echo '   AccountSummary, async: the background worker catches it up, off the append path.'
CREATE TABLE account_summary (account text PRIMARY KEY, deposits int NOT NULL, withdrawals int NOT NULL);
CREATE FUNCTION account_summary_handler(e es_event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO account_summary VALUES (e.stream_id,
        (e.event_type = 'Deposited')::int, (e.event_type = 'Withdrawn')::int)
    ON CONFLICT (account) DO UPDATE
        SET deposits = account_summary.deposits + EXCLUDED.deposits,
            withdrawals = account_summary.withdrawals + EXCLUDED.withdrawals
$$;
SELECT 'AccountSummary' AS registered_projection
FROM es_register_projection('AccountSummary', 'account_summary_handler(es_event)',
                            ARRAY['Deposited', 'Withdrawn'], 'async');
\echo '   Read your writes: wait until it has handled the newest event, then read it.'
SELECT es_projection_wait('AccountSummary', (SELECT max(global_position) FROM es_events)) AS caught_up;
SELECT * FROM account_summary ORDER BY account;
SELECT name, mode, position, head, lag, state FROM es_projection_status ORDER BY name;
