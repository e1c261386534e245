#!/usr/bin/env bash
# tests/memory.sh — backend memory stays bounded.
#
# 1. Reading a 1,000,000-event stream with es_read (and es_read_backward)
#    must not hold the stream in backend memory: the result goes through a
#    tuplestore that spills to disk past work_mem.  We sample the reading
#    backend's private memory (RssAnon in /proc/PID/status) while it reads
#    and fail if it grows by more than LIMIT_MB over what it used before.
#    The stream takes ~250 MB as rows, so holding it would be seen at once.
#    es_load folding it (no snapshot), and es_projection_rebuild handing it
#    to a handler, are measured the same way.
# 2. 110,000 appends in one long session must not leak per call: RssAnon
#    while they run must stay within LIMIT_MB of what the session used before.
#
# Needs a running server (PG* variables, as set by tests/lib.sh) on this
# machine, and /proc.  Exits non-zero with the figures when a check fails.
set -euo pipefail

LIMIT_MB=${LIMIT_MB:-48}
EVENTS=${EVENTS:-1000000}
DB=es_memory_check

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT

# Loading shortcut: rows go straight into es_events (INSERT is allowed; only
# UPDATE, DELETE and TRUNCATE are refused), which is much faster than
# 1,000 es_append batches and gives the same stored stream.
psql -X -q -v ON_ERROR_STOP=1 -d $DB <<SQL
CREATE EXTENSION es;
INSERT INTO es_events (global_position, stream_id, version, event_id, event_type, data)
SELECT nextval('es_events_global_position_seq'), 'mem-1', g, gen_random_uuid(), 'Tick',
       jsonb_build_object('n', g, 'pad', repeat('x', 100))
FROM generate_series(1, $EVENTS) g;
INSERT INTO es_streams (stream_id, version) VALUES ('mem-1', $EVENTS);
VACUUM ANALYZE es_events;
SQL

rss_anon_kb() {
	awk '/^RssAnon:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# Runs SQL in a session named $1 and prints "baseline_kb peak_kb" of its
# backend: baseline sampled during a pg_sleep before the SQL, peak during it.
measure() {
	local app=$1 sql=$2 pid="" base=0 peak=0 now job
	PGAPPNAME=$app psql -X -q -At -v ON_ERROR_STOP=1 -d $DB \
		-c "SET work_mem = '4MB'" -c "SELECT pg_sleep(1)" -c "$sql" >"/tmp/$app.$$.out" &
	job=$!
	for _ in $(seq 1 100); do
		pid=$(psql -X -At -d $DB -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$app'")
		[ -n "$pid" ] && break
		sleep 0.05
	done
	[ -n "$pid" ] || { echo "could not find the backend of $app" >&2; return 1; }
	sleep 0.5
	base=$(rss_anon_kb "$pid")
	while kill -0 "$job" 2>/dev/null; do
		now=$(rss_anon_kb "$pid")
		[ "${now:-0}" -gt "$peak" ] && peak=$now
		sleep 0.02
	done
	wait "$job" || { echo "$app failed" >&2; return 1; }
	echo "$base $peak"
}

failed=0
check() {
	local what=$1 base=$2 peak=$3
	local grown=$(((peak - base) / 1024))
	if [ "$grown" -gt "$LIMIT_MB" ]; then
		echo "FAIL: $what: backend memory grew by ${grown} MB (from $((base / 1024)) MB to $((peak / 1024)) MB), limit ${LIMIT_MB} MB"
		failed=1
	else
		echo "ok: $what: backend memory grew by ${grown} MB (from $((base / 1024)) MB to $((peak / 1024)) MB), limit ${LIMIT_MB} MB"
	fi
}

read -r base peak < <(measure es_mem_read "SELECT count(*), sum((data->>'n')::bigint) FROM es_read('mem-1')")
result=$(cat /tmp/es_mem_read.$$.out | tail -1)
expected_sum=$((EVENTS * (EVENTS + 1) / 2))
if [ "$result" != "$EVENTS|$expected_sum" ]; then
	echo "FAIL: es_read returned '$result', expected '$EVENTS|$expected_sum'"
	failed=1
fi
check "es_read of $EVENTS events" "$base" "$peak"

# es_load folds the stream without a snapshot: only the current state is kept.
# (snapshot_every 0: the worker takes no snapshot that the load could start from)
psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d $DB <<'SQL'
CREATE FUNCTION mem_apply(state jsonb, e es_event) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('sum', (state->>'sum')::bigint + (e.data->>'n')::bigint) $$;
SELECT es_register_aggregate('mem', 'mem_apply(jsonb, es_event)', '{"sum": 0}', 0);
SQL
if [ "$(psql -X -At -d $DB -c "SELECT count(*) FROM es_snapshots")" != 0 ]; then
	echo "FAIL: es_snapshots is not empty: es_load would not fold every event"
	failed=1
fi
read -r base peak < <(measure es_mem_load "SELECT version, state->>'sum' FROM es_load('mem-1')")
result=$(tail -1 /tmp/es_mem_load.$$.out)
if [ "$result" != "$EVENTS|$expected_sum" ]; then
	echo "FAIL: es_load returned '$result', expected '$EVENTS|$expected_sum'"
	failed=1
fi
check "es_load folding $EVENTS events" "$base" "$peak"

read -r base peak < <(measure es_mem_backward "SELECT count(*) FROM es_read_backward('mem-1')")
check "es_read_backward of $EVENTS events" "$base" "$peak"

# A projection rebuild hands every event to a handler: memory stays flat.
psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d $DB <<'SQL'
CREATE FUNCTION mem_handler(e es_event) RETURNS void LANGUAGE plpgsql
AS $$ BEGIN IF (e.data->>'n')::bigint < 0 THEN RAISE EXCEPTION 'negative'; END IF; END $$;
CREATE FUNCTION mem_reset() RETURNS void LANGUAGE sql AS 'SELECT';
SELECT es_register_projection('mem', 'mem_handler(es_event)', NULL, 'manual', 'mem_reset()');
SQL
read -r base peak < <(measure es_mem_rebuild "SET client_min_messages = warning; SELECT es_projection_rebuild('mem')")
result=$(tail -1 /tmp/es_mem_rebuild.$$.out)
if [ "$result" != "$EVENTS" ]; then
	echo "FAIL: es_projection_rebuild returned '$result', expected '$EVENTS'"
	failed=1
fi
check "es_projection_rebuild of $EVENTS events" "$base" "$peak"

# Appends: single events, batches of two, single events, in one session.
# Each statement touches a stream once, as applications do (appending to one
# stream over and over inside one transaction builds long update chains on
# its es_streams row, which is slow and not what this measures).
read -r base peak < <(measure es_mem_append "
	SELECT count(es_append('leak-' || g, NULL, 'Tick', '{\"a\": 1}', '{\"m\": 2}')) FROM generate_series(1, 50000) g;
	SELECT count(es_append('leak-' || g, 1, '[{\"type\": \"A\", \"data\": {}}, {\"type\": \"B\", \"data\": {}}]'::jsonb)) FROM generate_series(1, 30000) g;
	SELECT count(es_append('leak-' || g, 3, 'Tick', '{}')) FROM generate_series(1, 30000) g;")
check "110,000 appends in one session" "$base" "$peak"

rm -f /tmp/es_mem_*.$$.out
exit $failed
