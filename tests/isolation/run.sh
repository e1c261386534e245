#!/usr/bin/env bash
# tests/isolation/run.sh — runs the isolation specs (tests/isolation/specs/*.spec,
# expected output in tests/isolation/expected/*.out) with pg_isolation_regress
# against an already running server with es installed.
#
# Connection: the usual libpq environment (PGHOST, PGPORT, PGUSER), as exported
# by es_cluster_start in tests/lib.sh.  pg_isolation_regress drops and creates
# the test database (es_isolation) and runs CREATE EXTENSION es in it
# (--load-extension; not --use-existing, which would skip both).
#
# Usage: bash tests/isolation/run.sh [spec-name ...]     (default: every spec)
#
# The specs run one at a time, never in parallel: each spec's setup drops and
# creates the extension again to start every permutation from empty tables
# (es_events cannot be emptied otherwise: DELETE and TRUNCATE raise SE405).
#
# Results go to tests/isolation/output_iso/ (results/*.out, regression.diffs).
# On failure regression.diffs is printed and the exit status is non-zero.

set -euo pipefail

ISO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ISO_DIR/../.."

PG_MAJOR=${ES_PG_MAJOR:-15}
PG_BINDIR=${ES_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
ISO_REGRESS=$PG_BINDIR/../lib/pgxs/src/test/isolation/pg_isolation_regress
OUT_DIR=tests/isolation/output_iso

if [ ! -x "$ISO_REGRESS" ]; then
	echo "pg_isolation_regress not found at $ISO_REGRESS (install postgresql-server-dev-$PG_MAJOR)" >&2
	exit 2
fi

if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=()
	for spec in tests/isolation/specs/*.spec; do
		tests+=("$(basename "$spec" .spec)")
	done
fi
if [ ${#tests[@]} -eq 0 ]; then
	echo "no isolation specs found under tests/isolation/specs" >&2
	exit 2
fi

conn=()
[ -n "${PGHOST:-}" ] && conn+=(--host="$PGHOST")
[ -n "${PGPORT:-}" ] && conn+=(--port="$PGPORT")
[ -n "${PGUSER:-}" ] && conn+=(--user="$PGUSER")

# A step that blocks when it should not (say, an append to another stream
# waiting for ours) is cancelled by isolationtester after PGISOLATIONTIMEOUT
# seconds and shows up in the diff; 300 by default, 60 is plenty here.
export PGISOLATIONTIMEOUT=${PGISOLATIONTIMEOUT:-60}

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"

status=0
"$ISO_REGRESS" \
	"${conn[@]}" \
	--bindir="$PG_BINDIR" \
	--dbname=es_isolation \
	--load-extension=es \
	--inputdir=tests/isolation \
	--outputdir="$OUT_DIR" \
	"${tests[@]}" || status=$?

if [ $status -ne 0 ]; then
	if [ -s "$OUT_DIR/regression.diffs" ]; then
		echo "==== $OUT_DIR/regression.diffs ====" >&2
		cat "$OUT_DIR/regression.diffs" >&2
	fi
	exit $status
fi
