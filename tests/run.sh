#!/usr/bin/env bash
# tests/run.sh — the whole test suite, from a clean clone, as root or not.
#
# Installs what is missing (PostgreSQL 15 server and headers, libpq, a
# compiler), builds es with -Werror, installs it, starts a throwaway cluster
# (tests/lib.sh) and runs, in order:
#   1. the pg_regress tests   sql/NNN_*.sql against expected/NNN_*.out
#   2. the isolation specs     tests/isolation/specs/*.spec
#   3. the libpq stress test   tests/stress/es_stress.c, and its self-test
#   4. the memory check        tests/memory.sh (a 1M-event read stays bounded)
#   5. the dump check          tests/dump_restore.sh (pg_dump/pg_restore keep everything)
#   5b. the upgrade            tests/upgrade.sh (0.1.0 -> 0.2.0, on a throwaway cluster
#                              of its own)
#   6. notifications           tests/notify.sh
#   6b. a hot standby          tests/standby.sh (reads work there, appends do not)
#   6c. logical replication    tests/logical.sh (a subscriber's inline projection, on two
#                              throwaway clusters of its own)
#   7. the follower test       tests/follower/es_follower.c (gap-free order), and its self-test
#   8. the workers             tests/workers.sh (one per database, no configuration)
#   8a. no free worker slot  tests/worker_slots.sh (max_worker_processes used up, on a
#                              cluster of its own: logged with a hint, appends notify
#                              themselves, the worker comes when a slot frees)
#   8b. async projections      tests/projections.sh (fed by the worker: roles, failures,
#                              kill -9 of the worker, rebuilds, dump/restore)
#   8c. crash safety           tests/crash.sh (kill -9 of the postmaster under load, on a
#                              cluster of its own; every acknowledged append survives)
#   8d. hostile input          tests/hostile.sh (thousands of malformed calls: documented
#                              SQLSTATEs only, failed calls write nothing, no crash)
#   9. the examples            tests/examples.sh (examples/python, examples/node, on a
#                              throwaway cluster of their own)
# and then, on a second cluster without shared_preload_libraries, the
# regression tests and the notification test again (the fallbacks).
# The cluster is stopped and removed on exit, whether tests pass or fail.
# Ends with a line "N passed, N failed" and exits non-zero if any failed.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ES_ROOT"

es_setup
es_cluster_start

passed=0
failed=0
failures=()

run_part() {
	local name=$1
	shift
	es_log "$name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$name")
	fi
}

regress() {
	rm -rf results regression.diffs regression.out
	if make -s PG_CONFIG="$ES_PG_BIN/pg_config" installcheck; then
		return 0
	fi
	[ -f regression.diffs ] && cat regression.diffs
	return 1
}

run_part "regression tests (pg_regress)" regress
run_part "isolation specs (pg_isolation_regress)" bash tests/isolation/run.sh
run_part "stress test (16 clients, libpq)" bash tests/stress/run.sh
run_part "stress checker self-test (each sabotage is caught)" bash tests/stress/run.sh --self-test
run_part "memory check (1M-event read)" bash tests/memory.sh
run_part "pg_dump / pg_restore round trip" bash tests/dump_restore.sh
run_part "upgrade 0.1.0 -> 0.2.0 (ALTER EXTENSION es UPDATE equals a fresh install)" bash tests/upgrade.sh
run_part "notifications (coalesced, from the worker)" bash tests/notify.sh
run_part "hot standby: reads work, appends are refused" bash tests/standby.sh
run_part "logical replication: a subscriber keeps its own inline read model" bash tests/logical.sh
run_part "follower test: gap-free global order (sleep and es_wait followers)" bash tests/follower/run.sh
run_part "follower checker self-test (each sabotage is caught)" bash tests/follower/run.sh --self-test
run_part "a worker in every database (launcher, DROP/RENAME/TEMPLATE, kill -9)" bash tests/workers.sh
run_part "no free worker slot: logged, appends notify themselves, worker comes later" bash tests/worker_slots.sh
run_part "async projections fed by the worker (roles, failures, kill -9, rebuild, dump)" bash tests/projections.sh
run_part "automatic snapshots taken by the worker (count, time, refresh, failures, roles)" bash tests/snapshots.sh
run_part "crash safety: kill -9 of the postmaster under load, three times" bash tests/crash.sh --kills 3
run_part "hostile input (generated calls to every es function)" bash tests/hostile.sh
run_part "es from application code (Python psycopg, Node.js pg examples)" bash tests/examples.sh

# The same store without preloading: no registry, no worker.  The fallbacks
# (an advisory lock for the global order, polling es_wait, notifications
# from the appending transactions) must be just as correct.
es_cluster_stop
ES_PRELOAD=0 es_cluster_start
run_part "regression tests without preloading" regress
run_part "notifications without the worker" env ES_EXPECT_WORKER=0 bash tests/notify.sh
run_part "follower test without preloading (advisory-lock fallback)" bash tests/follower/run.sh

es_log "summary"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
