#!/usr/bin/env bash
# tests/workers.sh — one background worker in every database where es is
# installed, with no configuration.
#
# Two databases created after the server started, es installed in both:
# each gets its own worker within seconds; appends in each are announced by
# that database's worker only (the notifying pid is its worker's, and no
# notification crosses databases); while 8 connections append, no session
# waits on the NOTIFY lock; DROP EXTENSION ends the worker and CREATE
# EXTENSION brings it back; DROP DATABASE of a database with a worker
# succeeds at once; kill -9 of a worker makes the server restart, and every
# worker comes back.
#
# Needs a running server with es preloaded (PG* variables, as set by
# tests/lib.sh).
set -euo pipefail

failed=0
fail() { echo "FAIL: $*"; failed=1; }
q() { psql -X -At -v ON_ERROR_STOP=1 "$@"; }

# worker_of DB [SECONDS]: the pid of DB's worker, once it runs ("" if none came).
worker_of() {
	local db=$1 tries=$((${2:-10} * 10)) pid=""
	for _ in $(seq 1 "$tries"); do
		pid=$(q -d "$db" -c "SELECT pid FROM es_worker_status" 2>/dev/null || true)
		[ -n "$pid" ] && break
		sleep 0.1
	done
	echo "$pid"
}

# no_worker_in DB: waits (up to 5 s) until DB has no es worker.
no_worker_in() {
	for _ in $(seq 1 50); do
		[ "$(q -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'es worker' AND datname = '$1'")" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

q -d postgres -c "DROP DATABASE IF EXISTS es_wk_a" -c "DROP DATABASE IF EXISTS es_wk_b" >/dev/null
q -d postgres -c "CREATE DATABASE es_wk_a" -c "CREATE DATABASE es_wk_b" >/dev/null
for db in es_wk_a es_wk_b; do q -d "$db" -c "CREATE EXTENSION es" >/dev/null; done

pid_a=$(worker_of es_wk_a)
pid_b=$(worker_of es_wk_b)
[ -n "$pid_a" ] || fail "es_wk_a got no worker"
[ -n "$pid_b" ] || fail "es_wk_b got no worker"
[ "$pid_a" != "$pid_b" ] || fail "one worker for two databases"
echo "workers: es_wk_a $pid_a, es_wk_b $pid_b"

# A listener in each database while 100 appends commit in es_wk_a only.
listen() {
	psql -X -q -d "$1" <<SQL
LISTEN es_events;
SELECT pg_sleep(2.5);
SELECT 'done';
SQL
}
listen es_wk_a >"$PGHOST/listen_a.out" 2>&1 &
la=$!
listen es_wk_b >"$PGHOST/listen_b.out" 2>&1 &
lb=$!
sleep 0.5
for i in $(seq 1 100); do echo "SELECT es_append('acct-$i', NULL, 'Tick', '{}');"; done | q -d es_wk_a >/dev/null
wait $la $lb
count_a=$(grep -c 'Asynchronous notification "es_events"' "$PGHOST/listen_a.out" || true)
count_b=$(grep -c 'Asynchronous notification "es_events"' "$PGHOST/listen_b.out" || true)
pids_a=$(grep -o 'server process with PID [0-9]*' "$PGHOST/listen_a.out" | awk '{print $NF}' | sort -u | tr '\n' ' ')
[ "$count_a" -ge 1 ] && [ "$count_a" -lt 100 ] || fail "es_wk_a: $count_a notifications for 100 appends"
[ "$pids_a" = "$pid_a " ] || fail "es_wk_a's notifications came from '$pids_a', not its worker $pid_a"
[ "$count_b" = 0 ] || fail "es_wk_b heard $count_b notifications of es_wk_a's appends"
echo "es_wk_a: 100 appends, $count_a notifications from its worker; es_wk_b heard $count_b"

# 8 connections appending for 3 s: nobody waits on the NOTIFY lock
# (a lock on object 0 of pg_database, which notifying commits take).
cat >"$PGHOST/append.sql" <<'SQL'
\set s random(1, 1000)
SELECT es_append('load-' || :client_id || '-' || :s, NULL, 'Tick', '{}');
SQL
"$ES_PG_BIN/pgbench" -n -c 8 -j 2 -T 3 -f "$PGHOST/append.sql" es_wk_b >"$PGHOST/pgbench.out" 2>&1 &
bench=$!
waits=0
for _ in $(seq 1 25); do
	sleep 0.1
	n=$(q -d postgres -c "SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass AND objid = 0 AND NOT granted")
	waits=$((waits + n))
done
wait $bench || fail "pgbench failed: $(cat "$PGHOST/pgbench.out")"
[ "$waits" = 0 ] || fail "$waits samples of sessions waiting on the NOTIFY lock"
echo "8 appending connections: $waits waits on the NOTIFY lock in 25 samples ($(grep -o 'tps = [0-9.]*' "$PGHOST/pgbench.out" | head -1))"

# DROP EXTENSION ends the worker; CREATE EXTENSION brings it back.
q -d es_wk_b -c "DROP EXTENSION es" >/dev/null
no_worker_in es_wk_b || fail "es_wk_b's worker did not stop after DROP EXTENSION"
q -d es_wk_b -c "CREATE EXTENSION es" >/dev/null
pid_b2=$(worker_of es_wk_b 5)
[ -n "$pid_b2" ] || fail "no worker after CREATE EXTENSION es again"
echo "DROP EXTENSION: worker gone; CREATE EXTENSION: worker $pid_b2"

# Renaming, copying and dropping a database with a worker are not blocked.
start=$(date +%s%N)
q -d postgres -c "ALTER DATABASE es_wk_b RENAME TO es_wk_c" >/dev/null || fail "RENAME was blocked"
q -d postgres -c "CREATE DATABASE es_wk_d TEMPLATE es_wk_c" >/dev/null || fail "CREATE DATABASE ... TEMPLATE was blocked"
[ -n "$(worker_of es_wk_c 5)" ] || fail "es_wk_c has no worker after the rename"
[ -n "$(worker_of es_wk_d 5)" ] || fail "the copy es_wk_d has no worker"
start=$(date +%s%N)
q -d postgres -c "DROP DATABASE es_wk_c" >/dev/null || fail "DROP DATABASE was blocked"
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -lt 3000 ] || fail "DROP DATABASE took $ms ms"
echo "RENAME, CREATE DATABASE ... TEMPLATE and DROP DATABASE (${ms} ms) with workers: ok"

# kill -9 of a worker: the server restarts, every worker comes back.
pid_a=$(worker_of es_wk_a)
kill -9 "$pid_a"
sleep 2
for _ in $(seq 1 100); do q -d postgres -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
new_a=$(worker_of es_wk_a 15)
new_d=$(worker_of es_wk_d 15)
[ -n "$new_a" ] && [ "$new_a" != "$pid_a" ] || fail "es_wk_a's worker did not come back after kill -9 (was $pid_a, now '$new_a')"
[ -n "$new_d" ] || fail "es_wk_d's worker did not come back after the crash restart"
echo "kill -9 of worker $pid_a: workers back (es_wk_a $new_a, es_wk_d $new_d)"

q -d postgres -c "DROP DATABASE es_wk_a" -c "DROP DATABASE es_wk_d" >/dev/null || fail "cleanup: DROP DATABASE failed"
exit $failed
