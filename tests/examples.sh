#!/usr/bin/env bash
# tests/examples.sh — es from application code: runs the Python (psycopg 3)
# and Node.js (node-postgres) bank-account programs of examples/ against a
# throwaway cluster of its own (preloaded), each in a database created after
# the server started, with es installed and examples/setup.sql run there,
# connected as app_writer, and checks what they print.
#
# Installs what is missing: python3-psycopg (Debian), nodejs and npm
# (Debian) when there is no node, and examples/node's packages with `npm ci`
# (the committed package-lock.json).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ES_ROOT"

PYTHON=/usr/bin/python3

apt_install() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing: $* (run as root to install)" >&2
		return 1
	fi
	es_log "installing $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

"$PYTHON" -c 'import psycopg' 2>/dev/null || apt_install python3-psycopg
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	apt_install nodejs npm
fi
# npm ci writes node_modules/.package-lock.json: install again when the
# committed lockfile is newer.
if [ examples/node/package-lock.json -nt examples/node/node_modules/.package-lock.json ]; then
	es_log "npm ci in examples/node"
	(cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
fi

es_setup
es_cluster_start

failed=0
fail() { echo "FAIL: $*"; failed=1; }

# What both programs must print (the order of the writers' lines and of the
# follower's lines among the others varies; each line must be there once).
expected_lines() {
	cat <<'EOF'
opened account-alice with 100 at version 2
refused: withdraw 1000 from account-alice: insufficient funds (balance 100)
balance of account-alice: 40 at version 4
follower: position 1 account-alice v1 AccountOpened
follower: position 2 account-alice v2 MoneyDeposited
follower: position 3 account-alice v3 MoneyWithdrawn
follower: position 4 account-alice v4 MoneyWithdrawn
follower: caught up with 4 events, checkpoint 4
EOF
	if [ "$has_projections" = t ]; then
		echo "projection account_balances: account-alice balance 40 after 4 events (waited for position 4)"
	else
		echo "projection: skipped, this es has no es_register_projection"
	fi
}

# check NAME OUTPUT_FILE: the output has every expected line exactly once,
# and the concurrent writers' story: one SE409, then the retry won.
check() {
	local name=$1 out=$2 line n
	while IFS= read -r line; do
		n=$(grep -cxF -- "$line" "$out" || true)
		[ "$n" = 1 ] || fail "$name: expected once, found $n times: $line"
	done < <(expected_lines)
	n=$(grep -cE '^writer [AB]: SE409 at expected version 2 \(wrong expected version for stream "account-alice"\), retrying$' "$out" || true)
	[ "$n" = 1 ] || fail "$name: expected one SE409 retry line, found $n"
	grep -qE '^writer [AB]: withdrew 30, account-alice now at version 3 \(attempt 1\)$' "$out" ||
		fail "$name: no writer won at its first attempt"
	grep -qE '^writer [AB]: withdrew 30, account-alice now at version 4 \(attempt 2\)$' "$out" ||
		fail "$name: the writer that conflicted did not win its retry"
	n=$(grep -c '' "$out")
	[ "$n" = $(($(expected_lines | wc -l) + 3)) ] || fail "$name: $n lines, unexpected output"
}

# run NAME DB COMMAND...: a fresh database, es, setup.sql, the program as app_writer.
run() {
	local name=$1 db=$2
	shift 2
	es_log "$name example (database $db)"
	psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
	psql -X -q -d "$db" -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' \
		-c 'CREATE EXTENSION es' -f examples/setup.sql >/dev/null
	has_projections=$(psql -X -At -d "$db" -c "SELECT to_regprocedure('es_register_projection(text, regprocedure, text[], text, regprocedure)') IS NOT NULL")
	local out=$ES_CLUSTER_DIR/$name.out rc=0
	PGDATABASE=$db PGUSER=app_writer timeout 60 "$@" >"$out" 2>&1 || rc=$?
	cat "$out"
	[ "$rc" = 0 ] || fail "$name: exit code $rc"
	check "$name" "$out"
}

run python es_example_python "$PYTHON" examples/python/bank.py
run node es_example_node node examples/node/bank.js

[ "$failed" = 0 ] && echo "examples: both programs printed what they should"
exit "$failed"
