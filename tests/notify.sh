#!/usr/bin/env bash
# tests/notify.sh — notifications on channel es_events.
#
# With the background worker (es preloaded: every database with es has its
# own): a burst of appends, each committing on its own, is announced by
# few notifications, all sent by the worker (never by an appending backend),
# at most about one per es.notify_interval, the last one carrying the newest
# readable position.  With es.notify = off nothing is sent.
# Without the worker (ES_EXPECT_WORKER=0: es not preloaded), every appending
# transaction notifies itself, with its last position as payload.
#
# Needs a running server (PG* variables, as set by tests/lib.sh).
set -euo pipefail

expect_worker=${ES_EXPECT_WORKER:-1}
appends=200
failed=0
fail() { echo "FAIL: $*"; failed=1; }

psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS es" 2>/dev/null

# A listener that stays connected while another session appends $appends
# events, one transaction each, then waits for the last notification.
burst() {
	local tag=$1
	psql -X -q -v ON_ERROR_STOP=1 <<SQL
LISTEN es_events;
SELECT pg_sleep(0.2);
\\! psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -c "SELECT 1" $(for i in $(seq 1 $appends); do printf -- ' -c "SELECT es_append(%s, NULL, %s, %s)"' "'notify-$tag'" "'Tick'" "'{}'"; done)
SELECT pg_sleep(0.5);
SELECT 'done';
SQL
}

# The database's worker starts within about a second of CREATE EXTENSION.
worker_pid=""
if [ "$expect_worker" = 1 ]; then
	for _ in $(seq 1 100); do
		worker_pid=$(psql -X -At -c "SELECT pid FROM es_worker_status")
		[ -n "$worker_pid" ] && break
		sleep 0.1
	done
fi
[ "$expect_worker" = 1 ] ||
	worker_pid=$(psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'es worker' AND datname = current_database()")

# 1. Notifications on
out=$(burst on)
count=$(grep -c 'Asynchronous notification "es_events"' <<<"$out" || true)
pids=$(grep -o 'server process with PID [0-9]*' <<<"$out" | awk '{print $NF}' | sort -u | tr '\n' ' ')
last_payload=$(grep -o 'with payload "[0-9]*"' <<<"$out" | tail -1 | grep -o '[0-9]*' || true)
newest=$(psql -X -At -c "SELECT max(global_position) FROM es_events")

if [ "$expect_worker" = 1 ]; then
	[ -n "$worker_pid" ] || fail "no es worker is running"
	[ "$count" -ge 1 ] || fail "no notification for $appends appends"
	[ "$count" -lt "$appends" ] || fail "$count notifications for $appends appends: not coalesced"
	[ "$pids" = "$worker_pid " ] || fail "notifications came from PIDs '$pids', not only from the worker ($worker_pid)"
	echo "worker: $appends appends, $count notifications, all from the worker (PID $worker_pid)"
else
	[ -z "$worker_pid" ] || fail "an es worker is running although es is not preloaded"
	[ "$count" -eq "$appends" ] || fail "$count notifications for $appends appending transactions (expected one each)"
	echo "no worker: $appends appends, $count notifications, each from its appending transaction"
fi
[ "$last_payload" = "$newest" ] || fail "the last payload is '$last_payload', the newest readable position is $newest"

# 2. Notifications off
psql -X -q -c "LOAD 'es'" -c "ALTER SYSTEM SET es.notify = off" -c "SELECT pg_reload_conf()" -o /dev/null
sleep 0.5
out=$(burst off)
count=$(grep -c 'Asynchronous notification "es_events"' <<<"$out" || true)
[ "$count" -eq 0 ] || fail "$count notifications with es.notify = off"
echo "es.notify = off: $count notifications"
psql -X -q -c "LOAD 'es'" -c "ALTER SYSTEM RESET es.notify" -c "SELECT pg_reload_conf()" -o /dev/null

exit $failed
