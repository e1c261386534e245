#!/usr/bin/env bash
# tests/worker_slots.sh — when max_worker_processes is used up, on a
# throwaway cluster of its own (max_worker_processes = 3: the es launcher,
# PostgreSQL's logical replication launcher and one free slot).
#
# es in two databases: the first gets the free slot, the second none.  The
# log says so once, with a hint; es_worker_status there is empty; appends
# there still commit and are announced by the appending session itself (the
# notifying pid is the appender's, one notification per transaction), as
# without preloading: correct, slower.  When DROP EXTENSION frees the slot,
# the second database gets its worker within the launcher's retry interval,
# and from then on its worker announces its appends.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ES_ROOT"

es_setup
es_cluster_start "max_worker_processes = 3" "max_parallel_workers_per_gather = 0"

failed=0
fail() { echo "FAIL: $*"; failed=1; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# worker_of DB SECONDS: DB's worker pid once it runs, "" if none came in time.
worker_of() {
	local db=$1 tries=$(($2 * 10)) pid=""
	for _ in $(seq 1 "$tries"); do
		pid=$(q -d "$db" -c "SELECT pid FROM es_worker_status" 2>/dev/null || true)
		[ -n "$pid" ] && break
		sleep 0.1
	done
	echo "$pid"
}

# notified_by DB N: N appends in one session of DB, one per transaction,
# while a listener in DB listens; prints "<appender pid> <notifying pids>"
# and leaves the notification count in $PGHOST/count.
notified_by() {
	local db=$1 n=$2 appender
	psql -X -q -d "$db" >"$PGHOST/listen.out" 2>&1 <<'SQL' &
LISTEN es_events;
SELECT pg_sleep(2.5);
SELECT 'done';
SQL
	local listener=$!
	sleep 0.5
	appender=$({
		echo "SELECT pg_backend_pid();"
		for i in $(seq 1 "$n"); do echo "SELECT FROM es_append('slot-$i', NULL, 'Tick', '{}');"; done
	} | q -d "$db" | head -1)
	wait $listener
	grep -c 'Asynchronous notification "es_events"' "$PGHOST/listen.out" >"$PGHOST/count" || true
	echo "$appender $(grep -o 'server process with PID [0-9]*' "$PGHOST/listen.out" | awk '{print $NF}' | sort -u | tr '\n' ' ')"
}

busy=$(q -d postgres -c "SELECT string_agg(backend_type, ', ' ORDER BY backend_type) FROM pg_stat_activity WHERE backend_type IN ('es launcher', 'logical replication launcher')")
[ "$busy" = "es launcher, logical replication launcher" ] ||
	fail "expected the es and logical replication launchers in two of the three slots, saw '$busy'"

q -d postgres -c "CREATE DATABASE es_slot_a" -c "CREATE DATABASE es_slot_b"
q -d es_slot_a -c "CREATE EXTENSION es"
pid_a=$(worker_of es_slot_a 10)
[ -n "$pid_a" ] || fail "es_slot_a got no worker although one slot was free"

q -d es_slot_b -c "CREATE EXTENSION es"
logged=0
for _ in $(seq 1 50); do
	grep -q 'es launcher could not start a worker for database "es_slot_b"' "$ES_CLUSTER_DIR/server.log" && { logged=1; break; }
	sleep 0.1
done
[ "$logged" = 1 ] || fail "no log line about es_slot_b's missing worker"
grep -A2 'could not start a worker for database "es_slot_b"' "$ES_CLUSTER_DIR/server.log" |
	grep -q 'HINT:  Raise max_worker_processes' || fail "the log line has no hint to raise max_worker_processes"
[ -z "$(q -d es_slot_b -c "SELECT pid FROM es_worker_status")" ] || fail "es_worker_status shows a worker in es_slot_b"
echo "no slot for es_slot_b: logged with a hint, es_worker_status empty"

# Appends there commit and notify from their own transactions.
read -r appender notifiers <<<"$(notified_by es_slot_b 20)"
count=$(cat "$PGHOST/count")
[ "$count" = 20 ] || fail "es_slot_b without a worker: $count notifications for 20 appending transactions"
[ "$notifiers" = "$appender" ] || fail "es_slot_b without a worker: notified by '$notifiers', not the appender $appender"
[ "$(q -d es_slot_b -c "SELECT count(*) FROM es_events")" = 20 ] || fail "es_slot_b: appends without a worker were not all stored"
echo "es_slot_b without a worker: 20 appends, $count notifications, each from the appender $appender"

# The slot frees: es_slot_b gets its worker on the launcher's next retry.
q -d es_slot_a -c "DROP EXTENSION es"
pid_b=$(worker_of es_slot_b 15)
[ -n "$pid_b" ] || fail "es_slot_b got no worker after es_slot_a's slot was freed"
read -r appender notifiers <<<"$(notified_by es_slot_b 20)"
count=$(cat "$PGHOST/count")
[ "$notifiers" = "$pid_b" ] || fail "es_slot_b with its worker: notified by '$notifiers', not the worker $pid_b"
[ "$count" -ge 1 ] && [ "$count" -lt 20 ] || fail "es_slot_b with its worker: $count notifications for 20 appends"
echo "slot freed: es_slot_b's worker $pid_b announced 20 appends in $count notifications"

lines=$(grep -c 'could not start a worker for database "es_slot_b"' "$ES_CLUSTER_DIR/server.log" || true)
[ "$lines" = 1 ] || fail "the missing worker was logged $lines times, not once"
grep -q 'server process .* was terminated\|terminated by signal' "$ES_CLUSTER_DIR/server.log" &&
	fail "a backend crashed: $(grep 'terminated' "$ES_CLUSTER_DIR/server.log" | head -3)"
exit $failed
