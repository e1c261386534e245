#!/usr/bin/env bash
# bench/snapshots.sh — aggregate and snapshot benchmarks (not run by CI).  See bench/README.md.
#
# One throwaway cluster, a database created after the server started with
# es installed and no es.* setting (as a user has it).  Prints, each against
# a baseline measured in the same run:
#   1. es_load of streams of 100, 10,000 and 100,000 events of a category
#      registered with snapshot_every = 100, once the worker has caught up
#      (median of ES_BENCH_LOADS calls each): flat when the 100,000-event
#      load is within 1.5x of the 100-event one;
#   2. es_load of a 1,000-event stream without any snapshot vs a PL/pgSQL
#      function folding es_read with the same SQL apply, and vs the fold an
#      application would write in Python (psycopg 3: fetch es_read's rows,
#      fold them in Python); the same with the apply declared IMMUTABLE
#      (PostgreSQL then does not inline it); and es_load of a 1-event
#      stream (what es_load itself costs) vs the PL/pgSQL fold;
#   3. es_append throughput, 8 clients, synchronous_commit on, each client
#      appending to 10 streams of its own: category acct, with the aggregate
#      registered (snapshot_every = 100: every stream passes 100 events
#      within seconds, so the worker snapshots all through the run) vs
#      category free, with none; interleaved A B A B.
#
# Environment: ES_BENCH_SECONDS (each pgbench point, default 10),
# ES_BENCH_LOADS (timed loads per point, default 50), ES_BENCH_SKIP_BUILD=1
# (use the installed es).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/lib.sh
source "$BENCH_DIR/../tests/lib.sh"

SECONDS_PER_POINT=${ES_BENCH_SECONDS:-10}
LOADS=${ES_BENCH_LOADS:-50}
PGBENCH=$ES_PG_BIN/pgbench
DB=bank

[ -n "${ES_BENCH_SKIP_BUILD:-}" ] || es_setup
/usr/bin/python3 -c 'import psycopg' 2>/dev/null || apt-get install -y -q python3-psycopg >/dev/null
es_cluster_start 'shared_buffers = 1GB' 'max_wal_size = 8GB' 'checkpoint_timeout = 30min'
WORK=$ES_CLUSTER_DIR/bench
mkdir -p "$WORK"
chmod 777 "$WORK"
q() { psql -X -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

psql -X -q -d postgres -c "CREATE DATABASE $DB"
q -q <<'SQL'
CREATE EXTENSION es;
-- the seed's bank account, folded by README's SQL apply function (STABLE,
-- as to_jsonb is: inlined) ...
CREATE FUNCTION bank_apply(state jsonb, e es_event) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT CASE e.event_type
    WHEN 'AccountOpened'  THEN jsonb_build_object('owner', e.data->'owner', 'balance', 0, 'open', true)
    WHEN 'MoneyDeposited' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric + (e.data->>'amount')::numeric))
    WHEN 'MoneyWithdrawn' THEN jsonb_set(state, '{balance}', to_jsonb((state->>'balance')::numeric - (e.data->>'amount')::numeric))
    WHEN 'AccountClosed'  THEN jsonb_set(state, '{open}', 'false')
    ELSE state END $$;
-- the baselines: the fold written by hand in PL/pgSQL over es_read
CREATE FUNCTION pl_load(p_stream text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    s jsonb := '{}';
    e es_event;
BEGIN
    FOR e IN SELECT * FROM es_read(p_stream) LOOP
        s := bank_apply(s, e);
    END LOOP;
    RETURN s;
END $$;
-- ... and the same apply, and loop, with the body declared IMMUTABLE, which
-- PostgreSQL does not inline (it calls a STABLE function): the body then
-- runs as a query per event
DO $$
BEGIN
    EXECUTE format('CREATE FUNCTION bank_apply_imm(state jsonb, e es_event) RETURNS jsonb '
                   'LANGUAGE sql IMMUTABLE AS %L',
                   (SELECT prosrc FROM pg_proc WHERE proname = 'bank_apply'));
    EXECUTE format('CREATE FUNCTION pl_load_imm(p_stream text) RETURNS jsonb '
                   'LANGUAGE plpgsql STABLE AS %L',
                   (SELECT replace(prosrc, 'bank_apply(', 'bank_apply_imm(')
                    FROM pg_proc WHERE proname = 'pl_load'));
END $$;
-- (an initial balance: the appending clients below deposit into streams
-- they never opened)
SELECT es_register_aggregate('acct', 'bank_apply(jsonb, es_event)', '{"balance": 0}', 100);
SELECT es_register_aggregate('plain', 'bank_apply(jsonb, es_event)', '{"balance": 0}', 0);
SELECT es_register_aggregate('plainimm', 'bank_apply_imm(jsonb, es_event)', '{"balance": 0}', 0);
SQL
until [ "$(q -c "SELECT count(*) FROM es_worker_status" 2>/dev/null)" = 1 ]; do sleep 0.2; done

# A stream of N events: opened, then deposits and withdrawals, in batches of
# 1,000 (each its own transaction, as an application appends).
load_stream() {
	local stream=$1 n=$2
	q -q -c "SELECT es_append('$stream', 0, 'AccountOpened', '{\"owner\": \"Alice\"}')" >/dev/null
	local done=1
	while [ "$done" -lt "$n" ]; do
		local k=$((n - done < 1000 ? n - done : 1000))
		q -q -c "SELECT es_append('$stream', NULL, (SELECT jsonb_agg(jsonb_build_object(
			'type', CASE WHEN i % 3 = 0 THEN 'MoneyWithdrawn' ELSE 'MoneyDeposited' END,
			'data', jsonb_build_object('amount', i % 50 + 1))) FROM generate_series(1, $k) i))" >/dev/null
		done=$((done + k))
	done
}
for n in 100 10000 100000; do load_stream "acct-$n" "$n"; done
load_stream plain-1 1000
load_stream plainimm-1 1000
load_stream plain-2 1
q -q -c "VACUUM ANALYZE"

# Caught up: the worker has passed the head, and every acct stream's newest
# snapshot is within 100 of its version.
start=$(date +%s)
until [ "$(q -c "SELECT (SELECT position FROM es_aggregates WHERE category = 'acct') >= (SELECT max(global_position) FROM es_events)
	AND (SELECT bool_and(s.version - coalesce((SELECT max(version) FROM es_snapshots x WHERE x.stream_id = s.stream_id), 0) < 100)
	       FROM es_streams s WHERE s.stream_id LIKE 'acct-%')")" = t ]; do
	[ $(($(date +%s) - start)) -lt 300 ] || { echo "the worker did not catch up in 300 s" >&2; exit 1; }
	sleep 0.5
done
caught_up=$(($(date +%s) - start))
snapshots=$(q -c "SELECT string_agg(stream_id || ':' || n, ' ' ORDER BY stream_id) FROM (SELECT stream_id, count(*) n FROM es_snapshots GROUP BY 1) s")

# 1 and 2: timed in one Python process (psycopg 3), the same connection for all.
/usr/bin/python3 - "$DB" "$LOADS" <<'PY' >"$WORK/loads.out"
import statistics, sys, time
from decimal import Decimal
import psycopg

db, loads = sys.argv[1], int(sys.argv[2])
conn = psycopg.connect(dbname=db, autocommit=True)

def median_ms(fn):
    fn()                                  # warm: plans, caches
    times = []
    for _ in range(loads):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)

def es_load(stream):
    return conn.execute("SELECT state, version FROM es_load(%s)", (stream,)).fetchone()

def pl_load(stream):
    return conn.execute("SELECT pl_load(%s)", (stream,)).fetchone()

def pl_load_imm(stream):
    return conn.execute("SELECT pl_load_imm(%s)", (stream,)).fetchone()

def py_load(stream):
    # what an application writes: fetch the events, fold them in Python
    state = {}
    for event_type, data in conn.execute("SELECT event_type, data FROM es_read(%s)", (stream,)):
        if event_type == "AccountOpened":
            state = {"owner": data["owner"], "balance": Decimal(0), "open": True}
        elif event_type == "MoneyDeposited":
            state["balance"] += Decimal(str(data["amount"]))
        elif event_type == "MoneyWithdrawn":
            state["balance"] -= Decimal(str(data["amount"]))
        elif event_type == "AccountClosed":
            state["open"] = False
    return state

for n in (100, 10000, 100000):
    print(f"load {n} {median_ms(lambda: es_load(f'acct-{n}')):.3f}")
a, b, c = es_load("plain-1")[0], pl_load("plain-1")[0], py_load("plain-1")
assert a == b and Decimal(str(a["balance"])) == c["balance"], (a, b, c)
assert es_load("plainimm-1")[0] == pl_load_imm("plainimm-1")[0] == a
print(f"fold es {median_ms(lambda: es_load('plain-1')):.3f}")
print(f"fold pl {median_ms(lambda: pl_load('plain-1')):.3f}")
print(f"fold py {median_ms(lambda: py_load('plain-1')):.3f}")
print(f"foldimm es {median_ms(lambda: es_load('plainimm-1')):.3f}")
print(f"foldimm pl {median_ms(lambda: pl_load_imm('plainimm-1')):.3f}")
print(f"one es {median_ms(lambda: es_load('plain-2')):.3f}")
print(f"one pl {median_ms(lambda: pl_load('plain-2')):.3f}")
PY
v() { awk -v k="$1 $2" '$1 " " $2 == k { print $3 }' "$WORK/loads.out"; }

# 3: appends with and without the aggregate, interleaved.
for cat in acct free; do
	cat >"$WORK/append_$cat.sql" <<SQL
\\set s random(1, 10)
SELECT es_append('$cat-' || :run || '-' || :client_id || '-' || :s, NULL, 'MoneyDeposited', '{"amount": 100}');
SQL
done
append_point() { # append_point CATEGORY RUN: events/s
	q -q -c "CHECKPOINT"
	"$PGBENCH" -n -M prepared -c 8 -j 2 -T "$SECONDS_PER_POINT" -D run="$2" -f "$WORK/append_$1.sql" "$DB" 2>&1 | tee -a "$WORK/pgbench.log" |
		awk '/tps = .*without initial/ { printf "%.0f", $3 }'
}
declare -a with_agg without_agg
# (the same server, worker and registry; only the category differs: acct has
# the aggregate, free has none)
for round in 1 2; do
	with_agg+=("$(append_point acct "$round")")
	without_agg+=("$(append_point free "$round")")
done
taken=$(q -c "SELECT count(*) FROM es_snapshots WHERE stream_id ~ '^acct-[12]-'")
mean_with=$(((with_agg[0] + with_agg[1]) / 2))
mean_without=$(((without_agg[0] + without_agg[1]) / 2))

echo
echo "es $(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo '?'), $("$ES_PG_BIN/postgres" --version), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "worker caught up ${caught_up} s after the load; snapshots per stream: $snapshots"
printf '%-62s %12s %12s %7s %s\n' benchmark es baseline ratio target
l100=$(v load 100)
printf '%-62s %12s %12s %7s %s\n' "es_load, 10,000 events, snapshot_every 100 (ms) vs 100 events" "$(v load 10000)" "$l100" "$(ratio "$(v load 10000)" "$l100")" ""
printf '%-62s %12s %12s %7s %s\n' "es_load, 100,000 events, snapshot_every 100 (ms) vs 100 events" "$(v load 100000)" "$l100" "$(ratio "$(v load 100000)" "$l100")" "<= 1.5"
printf '%-62s %12s %12s %7s %s\n' "es_load of 1,000 events, no snapshot (ms) vs PL/pgSQL fold" "$(v fold es)" "$(v fold pl)" "$(ratio "$(v fold pl)" "$(v fold es)")x" ">= 1.5x faster"
printf '%-62s %12s %12s %7s %s\n' "es_load of 1,000 events, no snapshot (ms) vs Python fold" "$(v fold es)" "$(v fold py)" "$(ratio "$(v fold py)" "$(v fold es)")x" "(faster)"
printf '%-62s %12s %12s %7s %s\n' "same, apply declared IMMUTABLE (not inlined) vs PL/pgSQL fold" "$(v foldimm es)" "$(v foldimm pl)" "$(ratio "$(v foldimm pl)" "$(v foldimm es)")x" ""
printf '%-62s %12s %12s %7s %s\n' "es_load of a 1-event stream (ms) vs PL/pgSQL fold" "$(v one es)" "$(v one pl)" "$(ratio "$(v one pl)" "$(v one es)")x" ""
printf '%-62s %12s %12s %7s %s\n' "es_append/s, 8 clients, aggregate (snapshot_every 100) vs none" "$mean_with" "$mean_without" "$(ratio "$mean_with" "$mean_without")" ">= 0.95"
echo "  rounds: with ${with_agg[*]}, without ${without_agg[*]}; $taken automatic snapshots taken during the runs with the aggregate"
