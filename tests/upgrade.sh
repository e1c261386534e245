#!/usr/bin/env bash
# tests/upgrade.sh — the upgrade path 0.1.0 -> 0.2.0, on a throwaway cluster
# of its own (preloaded, with 0.1.0's es.worker_database still configured).
#
# With the current library installed: CREATE EXTENSION es VERSION '0.1.0'
# and use it (appends single and batch, an upcaster applied on read, reads
# in global order, 0.1.0's table grants for a writer; a role without them
# cannot append).  ALTER EXTENSION es UPDATE.  Then that database's
# extension objects must equal a fresh CREATE EXTENSION es in another
# database, object by object (tests/upgrade_describe.sql; any difference
# fails and is printed), and a self-test requires the comparison to catch
# sabotaged objects.  The data goes on: versions, positions, upcasting, new
# appends, es_load; the 0.1.0 writer grants no longer append, EXECUTE on
# es_append does.  No backend may crash meanwhile.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ES_ROOT"

es_setup
es_cluster_start "es.worker_database = 'postgres'"

failed=0
fail() { echo "FAIL: $*"; failed=1; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
describe() { q -d "$1" -f tests/upgrade_describe.sql; }

q -d postgres -c "CREATE DATABASE es_up_old" -c "CREATE DATABASE es_up_new" -c "CREATE DATABASE es_up_sabotage" \
	-c "CREATE ROLE es_up_writer LOGIN" -c "CREATE ROLE es_up_nobody LOGIN"

# 1. 0.1.0's SQL objects with 0.2.0's library.
got=$(q -d es_up_old 2>&1 <<'SQL'
CREATE EXTENSION es VERSION '0.1.0';
CREATE FUNCTION up_sqlstate(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE sql; RETURN 'ok';
EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$;
GRANT EXECUTE ON FUNCTION up_sqlstate(text) TO PUBLIC;
CREATE FUNCTION opened_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (data - 'name') || jsonb_build_object('owner', data->'name') $$;
GRANT SELECT, INSERT ON es_events TO es_up_writer;
GRANT SELECT, INSERT, UPDATE ON es_streams TO es_up_writer;
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'es';
SELECT 'a1 ' || es_append('acct-1', 0, 'AccountOpened', '{"name": "Alice"}');
SELECT 'a2 ' || es_append('acct-1', 1, '[{"type": "Deposited", "data": {"amount": 5}},
    {"type": "Deposited", "data": {"amount": 7}, "id": "80000000-0000-4000-8000-000000000001"}]');
SELECT 'a3 ' || es_append('acct-2', NULL, 'AccountOpened', '{"name": "Bob"}');
SELECT 'retry ' || es_append('acct-1', 2, 'Deposited', '{"amount": 7}', NULL, '80000000-0000-4000-8000-000000000001');
SELECT 'conflict ' || up_sqlstate($$SELECT es_append('acct-1', 1, 'Deposited', '{}')$$);
SELECT 'register ' || up_sqlstate($$SELECT es_register_upcaster('AccountOpened', 1, 'opened_v1_to_v2(jsonb)')$$);
SELECT 'read ' || string_agg(version || ':' || schema_version || ':' || data::text, ' ' ORDER BY version) FROM es_read('acct-1');
SELECT 'backward ' || string_agg(version::text, ',') FROM es_read_backward('acct-1');
SELECT 'all ' || string_agg(stream_id || '/' || version, ',' ORDER BY global_position) FROM es_read_all(0, 10);
SELECT 'category ' || count(*) FROM es_read_category('acct', 0, 10);
SELECT 'wait ' || (es_wait(0, 100) > 0);
SELECT 'stream_version ' || es_stream_version('acct-1');
SELECT 'hash ' || (es_stream_hash('acct-1') > 0) || ' ' || es_category('acct-1');
SET ROLE es_up_writer;
SELECT 'writer ' || up_sqlstate($$SELECT es_append('acct-3', 0, 'AccountOpened', '{"name": "Carol"}')$$);
SET ROLE es_up_nobody;
SELECT 'nobody ' || up_sqlstate($$SELECT es_append('acct-4', 0, 'AccountOpened', '{"name": "Dan"}')$$);
RESET ROLE;
SELECT 'immutable ' || up_sqlstate('DELETE FROM es_events');
SQL
) || fail "0.1.0 objects with the 0.2.0 library: $got"
want="version 0.1.0
a1 1
a2 3
a3 1
retry 3
conflict SE409
register ok
read 1:2:{\"owner\": \"Alice\"} 2:1:{\"amount\": 5} 3:1:{\"amount\": 7}
backward 3,2,1
all acct-1/1,acct-1/2,acct-1/3,acct-2/1
category 4
wait true
stream_version 3
hash true acct
writer ok
nobody 42501
immutable SE405"
if [ "$got" = "$want" ]; then
	echo "ok: 0.1.0's SQL objects work with the 0.2.0 library (0.1.0's table grants still decide who appends)"
else
	fail "0.1.0 objects with the 0.2.0 library answered:"; diff <(echo "$want") <(echo "$got") || true
fi
before=$(q -d es_up_old -c "SELECT string_agg(global_position || '/' || stream_id || '/' || version || '/' || event_id, ',' ORDER BY global_position) FROM es_events")

# 2. The update, and a fresh install to compare it with.
# README's steps: update, then drop the 0.1.0 writer grants (which row-level
# security makes ineffective) and grant EXECUTE on es_append instead.
q -d es_up_old -c "ALTER EXTENSION es UPDATE" || fail "ALTER EXTENSION es UPDATE failed"
q -d es_up_old -c "REVOKE INSERT, UPDATE ON es_events, es_streams FROM es_up_writer" \
	-c "REVOKE SELECT ON es_events, es_streams FROM es_up_writer" \
	-c "GRANT SELECT ON es_events, es_streams TO es_up_writer"
q -d es_up_new -c "CREATE EXTENSION es" -c "GRANT SELECT ON es_events, es_streams TO es_up_writer"
if diff <(describe es_up_new) <(describe es_up_old) >/tmp/es-upgrade.diff.$$; then
	echo "ok: the updated database's extension objects equal a fresh install's ($(describe es_up_new | wc -l) lines compared)"
else
	fail "the updated database differs from a fresh install (< fresh, > updated):"
	cat /tmp/es-upgrade.diff.$$
fi
rm -f /tmp/es-upgrade.diff.$$

# 3. Self-test: the comparison catches each sabotage.
q -d es_up_sabotage >/dev/null <<'SQL'
CREATE EXTENSION es;
COMMENT ON FUNCTION es_read(text, bigint, bigint) IS NULL;
ALTER FUNCTION es_category(text) STABLE;
ALTER TABLE es_events ENABLE TRIGGER es_events_immutable;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, jsonb) TO PUBLIC;
DROP POLICY es_streams_no_update ON es_streams;
ALTER TABLE es_aggregates ALTER COLUMN snapshot_every SET DEFAULT 10;
ALTER FUNCTION es_register_upcaster(text, integer, regprocedure) RESET search_path;
SQL
sabotage=$(diff <(describe es_up_new) <(describe es_up_sabotage) || true)
for pattern in "function es_read(text,bigint,bigint) .*comment=-" "function es_category(text) .*volatility=s" \
	"trigger es_events.es_events_immutable enabled=O" "function es_append(text,bigint,jsonb) .*=X/postgres" \
	"policy es_streams.es_streams_no_update" "column es_aggregates.snapshot_every .*default=10" \
	"function es_register_upcaster.*config=-"; do
	# (a here-string: grep -q leaving early must not fail a pipe under pipefail)
	grep -q -- "$pattern" <<<"$sabotage" || fail "self-test: the comparison missed a sabotage ($pattern)"
done
[ "$failed" = 0 ] && echo "ok: self-test: the comparison catches each of 7 sabotages"

# 4. The data goes on.
after=$(q -d es_up_old -c "SELECT string_agg(global_position || '/' || stream_id || '/' || version || '/' || event_id, ',' ORDER BY global_position) FROM es_events")
[ "$before" = "$after" ] || fail "events changed in the update: $before / $after"
got=$(q -d es_up_old 2>&1 <<'SQL'
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'es';
SELECT 'read ' || string_agg(version || ':' || schema_version, ' ' ORDER BY version) FROM es_read('acct-1');
SELECT 'a4 ' || es_append('acct-1', 3, 'Deposited', '{"amount": 1}');
SELECT 'position ' || (global_position > (SELECT max(global_position) FROM es_events WHERE stream_id <> 'acct-1'))
  FROM es_events WHERE stream_id = 'acct-1' AND version = 4;
SET ROLE es_up_writer;
SELECT 'writer ' || up_sqlstate($$SELECT es_append('acct-3', 1, 'Deposited', '{"amount": 2}')$$);
SELECT 'forge ' || up_sqlstate($$UPDATE es_streams SET version = 99$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid) TO es_up_writer;
SET ROLE es_up_writer;
SELECT 'granted ' || up_sqlstate($$SELECT es_append('acct-3', 1, 'Deposited', '{"amount": 2}')$$);
RESET ROLE;
CREATE FUNCTION balance(state jsonb, e es_event) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('balance', coalesce((state->>'balance')::int, 0) + coalesce((e.data->>'amount')::int, 0),
                            'owner', coalesce(state->'owner', e.data->'owner')) $$;
SELECT 'aggregate ' || up_sqlstate($$SELECT es_register_aggregate('acct', 'balance(jsonb, es_event)', '{}', 2)$$);
SELECT 'load ' || state::text || ' ' || version FROM es_load('acct-1');
SELECT 'snapshot ' || es_snapshot_take('acct-1');
SELECT 'load ' || state::text || ' ' || version FROM es_load('acct-1');
SQL
) || fail "the updated database: $got"
want='version 0.2.0
read 1:2 2:1 3:1
a4 4
position true
writer 42501
forge 42501
granted ok
aggregate ok
load {"owner": "Alice", "balance": 13} 4
snapshot 4
load {"owner": "Alice", "balance": 13} 4'
if [ "$got" = "$want" ]; then
	echo "ok: the data goes on after the update (versions, positions, upcasting, appends, es_load, the new grants)"
else
	fail "the updated database answered:"; diff <(echo "$want") <(echo "$got") || true
fi

# 5. The worker served the 0.1.0 database without a failing task, and
# nothing crashed.
for _ in $(seq 1 100); do
	grep -q 'es worker started for database "es_up_old"' "$ES_CLUSTER_DIR/server.log" && break
	sleep 0.1
done
grep -q 'es worker started for database "es_up_old"' "$ES_CLUSTER_DIR/server.log" ||
	fail "no worker started for the database installed at 0.1.0"
if grep -E 'es worker task .* failed' "$ES_CLUSTER_DIR/server.log"; then
	fail "a worker task failed (server log above)"
fi
if grep -E "terminated by signal|server process .* was terminated" "$ES_CLUSTER_DIR/server.log"; then
	fail "a backend crashed (server log above)"
fi
exit $failed
