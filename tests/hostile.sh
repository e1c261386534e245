#!/usr/bin/env bash
# tests/hostile.sh — hostile input: thousands of generated calls to every
# public es function with malformed and extreme arguments (tests/hostile.py
# says what is generated and what is checked).  Each call succeeds or fails
# with a SQLSTATE of README's error-code table, a failed call writes nothing,
# and the server never crashes: afterwards the server log must show no
# backend that died, and a new connection must work.
#
# Uses the running cluster of tests/run.sh (PG* and ES_CLUSTER_DIR set), or
# else builds es and starts a throwaway cluster of its own.  ES_HOSTILE_SEED
# and ES_HOSTILE_CALLS are passed on.
outer_cluster=${ES_CLUSTER_DIR:-}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ES_ROOT"

PYTHON=/usr/bin/python3
if ! "$PYTHON" -c 'import psycopg' 2>/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing: python3-psycopg (run as root to install)" >&2
		exit 1
	fi
	es_log "installing python3-psycopg"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends python3-psycopg >/dev/null
fi

if [ -n "$outer_cluster" ] && [ -n "${PGHOST:-}" ]; then
	ES_CLUSTER_DIR=$outer_cluster	# not ours: never stopped here
else
	es_setup
	es_cluster_start
fi

log=$ES_CLUSTER_DIR/server.log
offset=$(stat -c %s "$log")
status=0
"$PYTHON" tests/hostile.py || status=1

crashes=$(tail -c +"$((offset + 1))" "$log" |
	grep -E 'terminated by signal|was terminated by exception|server process \(PID [0-9]+\) exited|PANIC:|TRAP:|terminating any other active server processes' || true)
if [ -n "$crashes" ]; then
	echo "hostile: FAIL: the server log shows a crash:"
	echo "$crashes" | head -20
	status=1
fi
if ! psql -X -q -At -d postgres -c 'SELECT 1' >/dev/null; then
	echo "hostile: FAIL: no new connection after the run"
	status=1
fi
[ "$status" -eq 0 ] && echo "hostile: no crash in the server log"
exit "$status"
