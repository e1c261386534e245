#!/usr/bin/env bash
# tests/snapshots.sh — automatic snapshots, taken by the worker.
#
# In a database created after the server started, with aggregates
# registered by a role that is not a superuser: count-based snapshots
# (snapshot_every) appear for the streams that are far enough past their
# newest current snapshot and for no other; a time-based one
# (snapshot_after) appears once its time has come and not before; a
# CREATE OR REPLACE of apply and a higher schema_version are followed by
# current snapshots without any new append (refresh); an apply that raises
# never fails an append, is logged, queued and retried, and once fixed the
# snapshot appears while other categories went on meanwhile; apply runs as
# the registering role (it records current_user), never as a superuser, and
# an apply that writes a table only the superuser may write fails in the
# worker (logged) and writes nothing.
#
# Needs a running server with es preloaded (PG* variables and
# ES_CLUSTER_DIR, as set by tests/lib.sh).
set -euo pipefail

failed=0
fail() { echo "FAIL: $*"; failed=1; }
q() { psql -X -At -v ON_ERROR_STOP=1 -d es_snap "$@"; }
log=$ES_CLUSTER_DIR/server.log

# until SECONDS SQL: waits until the query returns t; false on timeout.
until_true() {
	local tries=$(($1 * 10))
	for _ in $(seq 1 "$tries"); do
		[ "$(q -c "$2" 2>/dev/null || true)" = t ] && return 0
		sleep 0.1
	done
	return 1
}

append() { # append STREAM N [DATA]: N appends, each its own transaction
	for _ in $(seq 1 "$2"); do
		echo "SELECT es_append('$1', NULL, 'Deposited', '${3:-{\"amount\": 1\}}');"
	done | q >/dev/null
}

psql -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' >/dev/null
DROP DATABASE IF EXISTS es_snap;
CREATE DATABASE es_snap;
DROP ROLE IF EXISTS es_snap_owner;
CREATE ROLE es_snap_owner LOGIN;
SQL
q <<'SQL' >/dev/null
CREATE EXTENSION es;
GRANT EXECUTE ON FUNCTION es_register_aggregate(text, regprocedure, jsonb, integer, integer, interval)
    TO es_snap_owner;
GRANT SELECT ON es_events TO es_snap_owner;
GRANT INSERT, UPDATE, DELETE ON es_aggregates TO es_snap_owner;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid) TO es_snap_owner;
CREATE SCHEMA app AUTHORIZATION es_snap_owner;
-- only the superuser may write this
CREATE TABLE public.secret (x text);
SET ROLE es_snap_owner;
CREATE TABLE app.apply_log (category text, who text, is_super boolean, session_who text);
CREATE FUNCTION app.sum_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.apply_log
        SELECT es_category(e.stream_id), current_user, r.rolsuper, session_user
          FROM pg_roles r WHERE r.rolname = current_user;
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1,
                              'sum', coalesce((state->>'sum')::int, 0) + (e.data->>'amount')::int);
END $$;
CREATE FUNCTION app.bad_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'boom' THEN
        RAISE EXCEPTION 'apply refuses event % of %', e.version, e.stream_id;
    END IF;
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1);
END $$;
CREATE FUNCTION app.evil_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.secret VALUES ('written by ' || current_user);
    RETURN state;
END $$;
SELECT es_register_aggregate('cnt', 'app.sum_apply(jsonb, es_event)', '{}', 10);
SELECT es_register_aggregate('tim', 'app.sum_apply(jsonb, es_event)', '{}', 0, 1, '2 seconds');
SELECT es_register_aggregate('bad', 'app.bad_apply(jsonb, es_event)', '{}', 2);
SELECT es_register_aggregate('evil', 'app.evil_apply(jsonb, es_event)', '{}', 1);
RESET ROLE;
SQL

newest() { # newest STREAM: version of its newest snapshot (empty: none)
	q -c "SELECT max(version) FROM es_snapshots WHERE stream_id = '$1'"
}

# Count-based: 25 events in cnt-1, 5 in cnt-2.
append cnt-1 25
append cnt-2 5
until_true 10 "SELECT coalesce(max(version), 0) > 15 FROM es_snapshots WHERE stream_id = 'cnt-1'" ||
	fail "count-based: no snapshot of cnt-1 (25 events, snapshot_every 10)"
sleep 1.5
v1=$(newest cnt-1)
[ -n "$v1" ] && [ "$((25 - v1))" -lt 10 ] || fail "count-based: cnt-1's newest snapshot is at '$v1' of 25"
[ -z "$(newest cnt-2)" ] || fail "count-based: cnt-2 (5 events) got a snapshot at $(newest cnt-2)"
[ "$(q -c "SELECT state FROM es_snapshots WHERE stream_id = 'cnt-1' AND version = $v1")" = "{\"n\": $v1, \"sum\": $v1}" ] ||
	fail "count-based: the snapshot of cnt-1 at $v1 is not the fold"
[ "$(q -q -c "SET ROLE es_snap_owner" -c "SELECT state FROM es_load('cnt-1')")" = '{"n": 25, "sum": 25}' ] || fail "es_load('cnt-1') is not the fold"
echo "count-based: cnt-1 (25 events) snapshot at $v1; cnt-2 (5 events) none"

# The worker ran apply as the registering role.
who=$(q -c "SELECT string_agg(DISTINCT who || '/' || is_super || '/' || session_who, ',') FROM app.apply_log WHERE category = 'cnt'")
case "$who" in
es_snap_owner/false/*) ;;
*) fail "apply ran as '$who' (current_user/superuser/session_user), not as es_snap_owner" ;;
esac
echo "apply in the worker ran as (current_user/is superuser/session_user): $who"

# Time-based: 3 events in tim-1; nothing before 2 s, a snapshot after.
append tim-1 3
t0=$(date +%s%N)
sleep 0.8
[ -z "$(newest tim-1)" ] || fail "time-based: a snapshot of tim-1 after 0.8 s (snapshot_after is 2 s)"
until_true 10 "SELECT coalesce(max(version), 0) = 3 FROM es_snapshots WHERE stream_id = 'tim-1'" ||
	fail "time-based: no snapshot of tim-1 within 10 s"
ms=$((($(date +%s%N) - t0) / 1000000))
echo "time-based: tim-1 snapshot at version 3 after ${ms} ms (snapshot_after 2 s)"
# a newer event: the snapshot is younger than 2 s, so the next one waits for it
append tim-1 1
until_true 10 "SELECT coalesce(max(version), 0) = 4 FROM es_snapshots WHERE stream_id = 'tim-1'" ||
	fail "time-based: no snapshot of tim-1 at version 4 within 10 s"
gap=$(q -c "SELECT extract(epoch FROM max(created_at) - min(created_at)) >= 1.9 FROM es_snapshots WHERE stream_id = 'tim-1'")
[ "$gap" = t ] || fail "time-based: two snapshots of tim-1 less than snapshot_after apart"
echo "time-based: the next snapshot (version 4) came snapshot_after after the first"

# Refresh: replacing apply makes cnt-1's snapshot stale; a current one appears without appends.
fp_old=$(q -c "SELECT fingerprint FROM es_snapshots WHERE stream_id = 'cnt-1' ORDER BY version DESC LIMIT 1")
q -c "SET ROLE es_snap_owner" -c "CREATE OR REPLACE FUNCTION app.sum_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO app.apply_log
        SELECT es_category(e.stream_id), current_user, r.rolsuper, session_user
          FROM pg_roles r WHERE r.rolname = current_user;
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1,
                              'sum', coalesce((state->>'sum')::int, 0) + 2 * (e.data->>'amount')::int);
END \$\$" >/dev/null
until_true 10 "SELECT count(*) > 0 AND bool_and(fingerprint <> '$fp_old') FROM es_snapshots WHERE stream_id = 'cnt-1'" ||
	fail "refresh: cnt-1's snapshots are still stale 10 s after CREATE OR REPLACE of apply"
[ "$(q -c "SELECT state FROM es_snapshots WHERE stream_id = 'cnt-1' ORDER BY version DESC LIMIT 1")" = '{"n": 25, "sum": 50}' ] ||
	fail "refresh: cnt-1's new snapshot is not the new logic's fold"
echo "refresh after CREATE OR REPLACE of apply: cnt-1 has a current snapshot at version $(newest cnt-1)"
q -c "SET ROLE es_snap_owner" -c "SELECT es_register_aggregate('cnt', 'app.sum_apply(jsonb, es_event)', '{}', 10, 2)" >/dev/null
until_true 10 "SELECT count(*) > 0 AND bool_and(schema_version = 2) FROM es_snapshots WHERE stream_id = 'cnt-1'" ||
	fail "refresh: no schema_version 2 snapshot of cnt-1 10 s after the re-registration"
echo "refresh after schema_version 2: cnt-1's snapshots are at schema_version 2"

# A failing apply: the appends succeed, the failure is logged and retried.
append bad-1 1
append bad-1 1 '{"boom": true}' || fail "an append failed because apply fails"
append bad-1 2
[ "$(q -c "SELECT es_stream_version('bad-1')")" = 4 ] || fail "appends to bad-1 did not all commit"
until_true 10 "SELECT failures >= 1 FROM es_snapshot_queue WHERE stream_id = 'bad-1'" ||
	fail "failing apply: bad-1 is not queued for a retry"
until_true 5 "SELECT last_error LIKE '%apply refuses event 2 of bad-1%' FROM es_aggregates WHERE category = 'bad'" ||
	fail "failing apply: es_aggregates.last_error does not say why"
grep -q 'automatic snapshot of stream "bad-1" failed: apply refuses event 2 of bad-1' "$log" ||
	fail "failing apply: not in the server log"
# others go on meanwhile
append cnt-3 12
until_true 10 "SELECT count(*) > 0 FROM es_snapshots WHERE stream_id = 'cnt-3'" ||
	fail "failing apply of bad-1 stopped the snapshots of cnt-3"
sleep 2
f1=$(q -c "SELECT failures FROM es_snapshot_queue WHERE stream_id = 'bad-1'")
[ "${f1:-0}" -ge 2 ] || fail "failing apply: bad-1 was not retried (failures: '$f1')"
[ -z "$(newest bad-1)" ] || fail "failing apply: bad-1 has a snapshot"
echo "failing apply: appends committed, logged, retried ($f1 failures so far), cnt-3 snapshotted meanwhile"
q -c "SET ROLE es_snap_owner" -c "CREATE OR REPLACE FUNCTION app.bad_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE plpgsql AS \$\$ BEGIN RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1); END \$\$" >/dev/null
until_true 30 "SELECT coalesce(max(version), 0) = 4 FROM es_snapshots WHERE stream_id = 'bad-1'" ||
	fail "failing apply fixed: no snapshot of bad-1 within 30 s"
[ "$(q -c "SELECT count(*) FROM es_snapshot_queue WHERE stream_id = 'bad-1'")" = 0 ] ||
	fail "failing apply fixed: bad-1 is still queued"
[ "$(q -c "SELECT failures || '/' || coalesce(last_error, '') FROM es_aggregates WHERE category = 'bad'")" = "0/" ] ||
	fail "failing apply fixed: es_aggregates still shows a failure"
echo "failing apply fixed: bad-1 snapshotted at version 4, its queue entry and failure gone"

# No privilege through the worker: evil's apply cannot write public.secret.
append evil-1 2
until_true 10 "SELECT failures >= 1 FROM es_snapshot_queue WHERE stream_id = 'evil-1'" ||
	fail "evil: the apply writing public.secret did not fail in the worker"
grep -q 'automatic snapshot of stream "evil-1" failed: permission denied for table secret' "$log" ||
	fail "evil: the permission failure is not in the server log"
[ "$(q -c "SELECT count(*) FROM public.secret")" = 0 ] || fail "evil: public.secret was written: $(q -c "SELECT * FROM public.secret")"
echo "no privilege through the worker: evil-1's apply got 'permission denied for table secret', nothing written"

# Paused: while a session holds es_snapshot_queue, the task writes nothing.
pause_fifo=$(mktemp -u)
mkfifo "$pause_fifo"
psql -X -q -d es_snap <"$pause_fifo" >/dev/null &
pause_pid=$!
exec 9>"$pause_fifo"
echo "BEGIN; LOCK TABLE es_snapshot_queue IN EXCLUSIVE MODE; SELECT 1;" >&9
until_true 5 "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
	WHERE c.relname = 'es_snapshot_queue' AND l.mode = 'ExclusiveLock' AND l.granted" ||
	fail "pause: the lock was not taken"
append cnt-4 15
sleep 2.5
[ -z "$(newest cnt-4)" ] || fail "pause: a snapshot of cnt-4 was taken while es_snapshot_queue was locked"
echo "COMMIT;" >&9
exec 9>&-
wait $pause_pid || true
rm -f "$pause_fifo"
until_true 10 "SELECT count(*) > 0 FROM es_snapshots WHERE stream_id = 'cnt-4'" ||
	fail "pause: no snapshot of cnt-4 after the lock was released"
echo "paused: no snapshot while a session held es_snapshot_queue; one within seconds after"

# Never a superuser, in any of the above.
[ "$(q -c "SELECT count(*) FROM app.apply_log WHERE is_super OR who <> 'es_snap_owner'")" = 0 ] ||
	fail "apply ran as another role or a superuser: $(q -c "SELECT DISTINCT who FROM app.apply_log")"
q -c "SELECT last_task, last_report FROM es_worker_status"

psql -X -q -d postgres -c "DROP DATABASE es_snap" -c "DROP ROLE es_snap_owner" >/dev/null || fail "cleanup failed"
exit $failed
