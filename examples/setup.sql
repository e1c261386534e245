-- examples/setup.sql — the database side of the bank-account examples
-- (examples/python, examples/node): what a migration would do once, run by
-- a superuser (or the extension's owner) in a database where es is
-- installed:
--
--   psql -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION IF NOT EXISTS es' -f examples/setup.sql
--
-- It creates the roles of README "Privileges" (the applications connect as
-- app_writer), registers the account aggregate of README "Aggregates and
-- snapshots", creates the follower's checkpoint table, and, when this es has
-- projections, an async projection account_balances.
\set ON_ERROR_STOP 1

-- Roles are per cluster: create them only once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_reader') THEN
        CREATE ROLE app_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_writer') THEN
        CREATE ROLE app_writer LOGIN;
    END IF;
END
$$;

-- Readers: SELECT, nothing else.  Writers: EXECUTE on es_append, no
-- privilege on any es table or sequence, and what readers have.
GRANT SELECT ON es_events, es_streams TO app_reader;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid),
                          es_append(text, bigint, jsonb) TO app_writer;
GRANT app_reader TO app_writer;

-- The account aggregate: es_load('account-…') folds a stream with this.
CREATE OR REPLACE FUNCTION account_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT CASE e.event_type
    WHEN 'AccountOpened'  THEN jsonb_build_object('owner', e.data->'owner', 'balance', 0, 'open', true)
    WHEN 'MoneyDeposited' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric + (e.data->>'amount')::numeric))
    WHEN 'MoneyWithdrawn' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric - (e.data->>'amount')::numeric))
    WHEN 'AccountClosed'  THEN jsonb_set(state, '{open}', 'false')
    ELSE state END $$;
SELECT es_register_aggregate('account', 'account_apply(jsonb, es_event)');

-- The follower's own checkpoint: the last global position it has handled,
-- one row per follower name.  It is the application's table, not es's.
CREATE TABLE IF NOT EXISTS follower_checkpoints (
    name     text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);
GRANT SELECT, INSERT, UPDATE ON follower_checkpoints TO app_writer;

-- A read model: one row per account with its balance, kept by an async
-- projection (the background worker feeds it the events in global order).
CREATE TABLE IF NOT EXISTS account_balances (
    account text PRIMARY KEY,
    balance numeric NOT NULL,
    events  bigint NOT NULL
);
GRANT SELECT ON account_balances TO app_reader;

CREATE OR REPLACE FUNCTION account_balances_handle(e es_event) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO account_balances AS b (account, balance, events)
  VALUES (e.stream_id,
          CASE e.event_type
            WHEN 'MoneyDeposited' THEN (e.data->>'amount')::numeric
            WHEN 'MoneyWithdrawn' THEN -(e.data->>'amount')::numeric
            ELSE 0 END,
          1)
  ON CONFLICT (account) DO UPDATE
  SET balance = b.balance + excluded.balance, events = b.events + 1 $$;

-- Projections arrived after aggregates: register only where es has them, so
-- that this file works with both.  The programs make the same check.
DO $$
BEGIN
    IF to_regprocedure('es_register_projection(text, regprocedure, text[], text, regprocedure)') IS NULL THEN
        RAISE NOTICE 'this es has no es_register_projection: the account_balances projection is not registered';
        RETURN;
    END IF;
    BEGIN
        PERFORM es_register_projection('account_balances', 'account_balances_handle(es_event)',
                                       ARRAY['AccountOpened', 'MoneyDeposited', 'MoneyWithdrawn'],
                                       'async');
    EXCEPTION WHEN duplicate_object THEN
        NULL;                   -- registered by an earlier run of this file
    END;
    -- Waiting is a read; grant it in case PUBLIC may not call it.
    GRANT EXECUTE ON FUNCTION es_projection_wait(text, bigint, integer) TO app_reader;
END
$$;
