#!/usr/bin/env bash
# bench/projections.sh — projection benchmarks (not run by CI).  See bench/README.md.
#
# One throwaway cluster, a database created after the server started with
# es installed and no es.* setting (as a user has it), ES_BENCH_EVENTS
# events (default 1,000,000: 10,000 streams of 100; every 1,000th event is
# of the rare type "Rare").  Prints, each against a baseline measured in
# the same run:
#   1. async catch-up through an upsert handler (the worker) vs a
#      hand-written PL/pgSQL catch-up procedure calling the same handler and
#      committing a checkpoint table every 1,000 events;
#   2. the lag of that async projection while 8 clients append at full
#      speed (time from an event becoming readable to the checkpoint
#      passing it: p50, p99, max);
#   3. es_projection_rebuild of every event vs a PL/pgSQL loop doing the
#      same (reset, then the handler for each event, one transaction);
#   4. an async projection of the rare type: catch-up time, and in steady
#      state (8 clients appending other types) the es_events rows read per
#      appended event, and the plan of the batch query;
#   5. es_append with one inline upsert projection vs es_append followed by
#      the same upsert as a second statement in the transaction (8 clients).
#
# Environment: ES_BENCH_EVENTS, ES_BENCH_SECONDS (each pgbench point,
# default 10), ES_BENCH_SKIP_BUILD=1 (use the installed es).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/lib.sh
source "$BENCH_DIR/../tests/lib.sh"

EVENTS=${ES_BENCH_EVENTS:-1000000}
SECONDS_PER_POINT=${ES_BENCH_SECONDS:-10}
STREAMS=$((EVENTS / 100))
PGBENCH=$ES_PG_BIN/pgbench
DB=shop

[ -n "${ES_BENCH_SKIP_BUILD:-}" ] || es_setup
es_cluster_start 'shared_buffers = 1GB' 'max_wal_size = 8GB' 'checkpoint_timeout = 30min'
WORK=$ES_CLUSTER_DIR/bench
mkdir -p "$WORK"
chmod 777 "$WORK"
q() { psql -X -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
now_ms() { date +%s%3N; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
rate() { awk -v n="$1" -v ms="$2" 'BEGIN { if (ms > 0) printf "%.0f", n * 1000 / ms; else print "-" }'; }

# wait_caught_up NAME: until the projection has handled the newest event
# (one session sleeping in es_projection_wait: no polling beside the worker).
wait_caught_up() {
	until [ "$(q -c "SELECT es_projection_wait('$1', (SELECT max(global_position) FROM es_events), 600000)")" = t ]; do
		sleep 0.05
	done
}

psql -X -q -d postgres -c "CREATE DATABASE $DB"
q -q <<SQL
CREATE EXTENSION es;
CREATE TABLE summary (stream_id text PRIMARY KEY, n int NOT NULL, total numeric NOT NULL);
CREATE FUNCTION summary_handler(e es_event) RETURNS void LANGUAGE sql AS \$\$
    INSERT INTO summary VALUES (e.stream_id, 1, (e.data->>'amount')::numeric)
    ON CONFLICT (stream_id) DO UPDATE SET n = summary.n + 1, total = summary.total + EXCLUDED.total
\$\$;
CREATE FUNCTION summary_reset() RETURNS void LANGUAGE sql AS 'TRUNCATE summary';

-- the baseline: a catch-up loop as one would write it by hand
CREATE TABLE pl_checkpoint (name text PRIMARY KEY, position bigint NOT NULL);
CREATE PROCEDURE pl_catch_up(p_name text, p_types text[]) LANGUAGE plpgsql AS \$\$
DECLARE
    e es_event;
    pos bigint;
    n int;
BEGIN
    LOOP
        SELECT position INTO pos FROM pl_checkpoint WHERE name = p_name FOR UPDATE;
        n := 0;
        FOR e IN SELECT global_position, stream_id, version, event_id, event_type, schema_version,
                        data, metadata, recorded_at
                   FROM es_events
                  WHERE global_position > pos AND (p_types IS NULL OR event_type = ANY (p_types))
                  ORDER BY global_position LIMIT 1000
        LOOP
            PERFORM summary_handler(e);
            pos := e.global_position;
            n := n + 1;
        END LOOP;
        UPDATE pl_checkpoint SET position = pos WHERE name = p_name;
        COMMIT;
        EXIT WHEN n < 1000;
    END LOOP;
END
\$\$;
CREATE FUNCTION pl_rebuild(p_types text[]) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
    e es_event;
    n bigint := 0;
BEGIN
    PERFORM summary_reset();
    FOR e IN SELECT global_position, stream_id, version, event_id, event_type, schema_version,
                    data, metadata, recorded_at
               FROM es_events WHERE p_types IS NULL OR event_type = ANY (p_types)
              ORDER BY global_position
    LOOP
        PERFORM summary_handler(e);
        n := n + 1;
    END LOOP;
    RETURN n;
END
\$\$;
SQL

echo "loading $EVENTS events ($STREAMS streams of 100) ..."
start=$(now_ms)
q -q <<SQL
DO \$\$
BEGIN
    FOR s IN 1..$STREAMS LOOP
        PERFORM es_append('acct-' || s, 0,
            (SELECT jsonb_agg(jsonb_build_object(
                        'type', CASE WHEN ((s - 1) * 100 + v) % 1000 = 0 THEN 'Rare' ELSE 'Deposited' END,
                        'data', jsonb_build_object('amount', v)))
               FROM generate_series(1, 100) v));
    END LOOP;
END
\$\$;
SQL
q -q -c "VACUUM ANALYZE es_events" -c "CHECKPOINT" >/dev/null
echo "loaded in $(( ($(now_ms) - start) / 1000 )) s"
deposits=$(q -c "SELECT count(*) FROM es_events WHERE event_type = 'Deposited'")

echo
echo "== 1. async catch-up of $deposits events through an upsert handler"
start=$(now_ms)
q -q -c "SELECT es_register_projection('summary_async', 'summary_handler(es_event)', ARRAY['Deposited'], 'async', 'summary_reset()')" >/dev/null
wait_caught_up summary_async
es_ms=$(( $(now_ms) - start ))
q -q -c "TRUNCATE summary" -c "INSERT INTO pl_checkpoint VALUES ('pl', 0)" -c "CHECKPOINT" >/dev/null
start=$(now_ms)
q -q -c "CALL pl_catch_up('pl', ARRAY['Deposited'])" >/dev/null
pl_ms=$(( $(now_ms) - start ))
es_rate=$(rate "$deposits" "$es_ms")
pl_rate=$(rate "$deposits" "$pl_ms")
printf '   es worker: %s events/s   PL/pgSQL loop: %s events/s   ratio %s (target >= 1.5)\n' \
	"$es_rate" "$pl_rate" "$(ratio "$es_rate" "$pl_rate")"

echo
echo "== 2. lag of the async projection while 8 clients append for ${SECONDS_PER_POINT} s"
cat >"$WORK/append.sql" <<'SQL'
\set s random(1, 100000)
SELECT es_append('load-' || :s, NULL, 'Deposited', '{"amount": 1}');
SQL
"$PGBENCH" -n -c 8 -j 2 -T "$SECONDS_PER_POINT" -f "$WORK/append.sql" "$DB" >"$WORK/lag_bench.out" 2>&1 &
bench=$!
/usr/bin/python3 - "$DB" summary_async "$bench" >"$WORK/lag.out" <<'PY'
import os, sys, time
import psycopg
db, name, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
samples = []
with psycopg.connect(dbname=db, autocommit=True) as conn:
    def alive():
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    while alive():
        pos, head = conn.execute("SELECT position, head FROM es_projection_status WHERE name = %s",
                                 (name,)).fetchone()
        samples.append((time.monotonic(), pos, head))
        time.sleep(0.01)
    # after the load: until caught up
    while True:
        pos, head = conn.execute("SELECT position, head FROM es_projection_status WHERE name = %s",
                                 (name,)).fetchone()
        samples.append((time.monotonic(), pos, head))
        if pos >= head:
            break
        time.sleep(0.01)
lags = []
j = 0
for i, (t, _, head) in enumerate(samples):
    j = max(j, i)
    while j < len(samples) and samples[j][1] < head:
        j += 1
    if j < len(samples):
        lags.append(samples[j][0] - t)
lags.sort()
def pct(p):
    return lags[min(len(lags) - 1, int(p * len(lags)))] * 1000
print("%d samples: p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (len(lags), pct(0.5), pct(0.99), lags[-1] * 1000))
PY
wait $bench
printf '   %s (appends: %s); target p99 < 1000 ms\n' "$(cat "$WORK/lag.out")" \
	"$(grep -o 'tps = [0-9.]*' "$WORK/lag_bench.out" | head -1)"

echo
total=$(q -c "SELECT count(*) FROM es_events")
echo "== 3. es_projection_rebuild of $total events vs the same in PL/pgSQL"
q -q -c "SELECT es_unregister_projection('summary_async')" \
	-c "SELECT es_register_projection('summary_manual', 'summary_handler(es_event)', NULL, 'manual', 'summary_reset()')" \
	-c "CHECKPOINT" >/dev/null
start=$(now_ms)
q -c "SELECT es_projection_rebuild('summary_manual')" 2>"$WORK/rebuild.notices" >/dev/null
es_ms=$(( $(now_ms) - start ))
q -q -c "CHECKPOINT" >/dev/null
start=$(now_ms)
q -c "SELECT pl_rebuild(NULL)" >/dev/null
pl_ms=$(( $(now_ms) - start ))
es_rate=$(rate "$total" "$es_ms")
pl_rate=$(rate "$total" "$pl_ms")
printf '   es_projection_rebuild: %s events/s   PL/pgSQL: %s events/s   ratio %s (target >= 1.5)\n' \
	"$es_rate" "$pl_rate" "$(ratio "$es_rate" "$pl_rate")"
printf '   its last NOTICE: %s\n' "$(tail -1 "$WORK/rebuild.notices" | sed 's/.*NOTICE:  //')"
q -q -c "SELECT es_unregister_projection('summary_manual')" >/dev/null

echo
rare=$(q -c "SELECT count(*) FROM es_events WHERE event_type = 'Rare'")
echo "== 4. an async projection of a rare type ($rare among $total events)"
q -q -c "CREATE TABLE rare_seen (global_position bigint PRIMARY KEY)" \
	-c "CREATE FUNCTION rare_handler(e es_event) RETURNS void LANGUAGE sql AS 'INSERT INTO rare_seen VALUES (e.global_position)'" \
	-c "SELECT pg_stat_reset()" >/dev/null
start=$(now_ms)
q -q -c "SELECT es_register_projection('rare', 'rare_handler(es_event)', ARRAY['Rare'], 'async')" >/dev/null
wait_caught_up rare
printf '   catch-up: %s ms\n' "$(( $(now_ms) - start ))"
sleep 1
reads() { q -c "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relname = 'es_events'"; }
r0=$(reads)
n0=$(q -c "SELECT count(*) FROM es_events")
"$PGBENCH" -n -c 8 -j 2 -T "$SECONDS_PER_POINT" -f "$WORK/append.sql" "$DB" >"$WORK/rare_bench.out" 2>&1
wait_caught_up rare
sleep 1
r1=$(reads)
n1=$(q -c "SELECT count(*) FROM es_events")
printf '   steady state: %s events appended, es_events rows read meanwhile: %s (%s per appended event;\n' \
	"$((n1 - n0))" "$((r1 - r0))" "$(ratio $((r1 - r0)) $((n1 - n0)))"
printf '   the appends themselves read none; the worker, the notifier and the sampler read the rest)\n'
pos=$(q -c "SELECT position FROM es_projections WHERE name = 'rare'")
echo "   plan of the batch query at the checkpoint (planned for each call):"
q -c "EXPLAIN SELECT * FROM es_events WHERE global_position > $pos AND global_position <= $pos + 100000
      AND event_type = ANY (ARRAY['Rare']) ORDER BY global_position LIMIT 1000" | sed 's/^/     /'

echo
echo "== 5. es_append with an inline upsert projection vs es_append + the upsert as a second statement"
cat >"$WORK/inline.sql" <<'SQL'
\set s random(1, 100000)
SELECT es_append('inl-' || :s, NULL, 'Deposited', '{"amount": 1}');
SQL
cat >"$WORK/second.sql" <<'SQL'
\set s random(1, 100000)
BEGIN;
SELECT es_append('inl-' || :s, NULL, 'Deposited', '{"amount": 1}');
INSERT INTO summary VALUES ('inl-' || :s, 1, 1)
    ON CONFLICT (stream_id) DO UPDATE SET n = summary.n + 1, total = summary.total + EXCLUDED.total;
COMMIT;
SQL
q -q -c "SELECT es_unregister_projection('rare')" >/dev/null
best_inline=0
best_second=0
for round in 1 2; do
	q -q -c "SELECT es_register_projection('inline_summary', 'summary_handler(es_event)', ARRAY['Deposited'], 'inline')" -c "CHECKPOINT" >/dev/null
	t=$("$PGBENCH" -n -c 8 -j 2 -T "$SECONDS_PER_POINT" -f "$WORK/inline.sql" "$DB" 2>&1 | grep -o 'tps = [0-9.]*' | head -1 | cut -d' ' -f3)
	awk -v a="$t" -v b="$best_inline" 'BEGIN { exit !(a > b) }' && best_inline=$t
	q -q -c "SELECT es_unregister_projection('inline_summary')" -c "CHECKPOINT" >/dev/null
	t=$("$PGBENCH" -n -c 8 -j 2 -T "$SECONDS_PER_POINT" -f "$WORK/second.sql" "$DB" 2>&1 | grep -o 'tps = [0-9.]*' | head -1 | cut -d' ' -f3)
	awk -v a="$t" -v b="$best_second" 'BEGIN { exit !(a > b) }' && best_second=$t
done
printf '   inline projection: %.0f appends/s   second statement: %.0f appends/s   ratio %s (target >= 1.0; best of 2)\n' \
	"$best_inline" "$best_second" "$(ratio "$best_inline" "$best_second")"
echo
echo "(machine: $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg); only ratios of one run mean anything)"
