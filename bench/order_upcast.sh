#!/usr/bin/env bash
# bench/order_upcast.sh — benchmarks of the gap-free global order and of
# upcasting (not run by CI).  See bench/README.md.
#
# On throwaway clusters (tests/lib.sh), prints ratios against baselines
# measured in the same run:
#   1. appends at 8 clients with the in-flight registry (es preloaded) vs
#      without it (a second cluster, es not preloaded); and with
#      notifications on vs off (worker in the benchmark database)
#   2. replaying 1M events through es_read_all in pages of 1,000 vs the same
#      pages read by a raw ORDER BY global_position scan: in the server (a
#      PL/pgSQL loop) and fetched by a client (pgbench)
#   3. es_read_category of a 100-event category in a store of 1M events vs a
#      raw indexed SELECT
#   4. es_read of 1,000 events: no upcasters; upcasters registered only for
#      other event types (a second database, rounds alternating with the
#      first); a 2-step chain (SQL and PL/pgSQL functions) applied to every
#      event — vs a raw SELECT of the same rows
#   5. es_wait wake-up latency: from an append's COMMIT returning to a
#      session blocked in es_wait returning (median and p99 of 1,000)
#
# Environment: ES_BENCH_SECONDS (default 10) per pgbench point,
# ES_BENCH_SKIP_BUILD=1 to use the installed es.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/lib.sh
source "$BENCH_DIR/../tests/lib.sh"
DURATION=${ES_BENCH_SECONDS:-10}
PGBENCH=$ES_PG_BIN/pgbench
[ -n "${ES_BENCH_SKIP_BUILD:-}" ] || es_setup

declare -a ROWS=()
row() {
	ROWS+=("$(printf '%-58s %12s %12s %8s  %s' "$1" "$2" "$3" "$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')" "$4")")
	echo "  ${ROWS[-1]}"
}

# tps SCRIPT CLIENTS [pgbench options]: transactions per second of a pgbench script (stdin)
tps() {
	local clients=$1
	shift
	local script
	script=$(mktemp /tmp/es-bench.XXXXXX.sql)
	cat >"$script"
	"$PGBENCH" -n -M prepared -T "$DURATION" -c "$clients" -j $((clients < 2 ? clients : 2)) "$@" -f "$script" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
	rm -f "$script"
}

append_script() {
	cat <<'SQL'
\set s random(1, 100)
SELECT es_append(concat('acct-', :client_id::int, '-', :s::int, '-', :run::int), NULL, 'Deposited', '{"amount": 100}'::jsonb);
SQL
}

start() {
	es_cluster_start 'shared_buffers = 1GB' 'max_wal_size = 8GB'
	export PGDATABASE=es_bench
	createdb es_bench
	psql -X -q -c 'CREATE EXTENSION es' 2>/dev/null
	sleep 2	# the launcher gives es_bench its worker within about a second
}

# --- 1. the registry and notifications -------------------------------------
es_log "appends at 8 clients: registry and notifications"
start
psql -X -q -c "ALTER SYSTEM SET es.notify = off" -c "SELECT pg_reload_conf()" >/dev/null
notify_off=$(append_script | tps 8 -D run=2)
psql -X -q -c "ALTER SYSTEM RESET es.notify" -c "SELECT pg_reload_conf()" >/dev/null
notify_on=$(append_script | tps 8 -D run=3)
row "append, 8 clients: notify on (worker) vs off" "$notify_on" "$notify_off" "events/s"

# --- 2-5 on the same preloaded cluster ---------------------------------------
es_log "preloading 1,000,000 events (direct INSERT, as in bench/preload.sql)"
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO es_events (global_position, stream_id, version, event_id, event_type, data)
SELECT nextval('es_events_global_position_seq'), 'big' || (g % 10000) || '-' || (g / 10000), 1,
       gen_random_uuid(), 'Deposited', jsonb_build_object('amount', g, 'currency', 'EUR')
FROM generate_series(1, 1000000) g;
INSERT INTO es_streams (stream_id, version) SELECT DISTINCT stream_id, 1 FROM es_events WHERE stream_id LIKE 'big%';
SELECT es_append('cat100-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('n', g))) FROM generate_series(1, 100) g));
SELECT es_append('read-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'AccountOpened', 'data', jsonb_build_object('name', 'x', 'n', g))) FROM generate_series(1, 1000) g));
VACUUM ANALYZE es_events;
SQL

es_log "replaying 1M events in pages of 1,000: es_read_all vs raw ORDER BY global_position"
RAW_COLUMNS="global_position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at"
# replay QUERY: events/s of a PL/pgSQL loop reading the whole store through
# QUERY, one page after another (in the server: no client transfer).
replay() {
	local query=$1 start end
	start=$(date +%s.%N)
	psql -X -q -v ON_ERROR_STOP=1 <<SQL
DO \$\$
DECLARE
    last bigint := 0;
    n bigint;
    top bigint;
BEGIN
    LOOP
        -- count(page.*): both sides must produce whole rows (a count of
        -- one column lets the planner drop the raw side's other columns)
        SELECT count(page.*), max(global_position) INTO n, top FROM ($query) page;
        EXIT WHEN n = 0;
        last := top;
    END LOOP;
END
\$\$;
SQL
	end=$(date +%s.%N)
	awk -v s="$start" -v e="$end" -v n="$(psql -X -At -c 'SELECT count(*) FROM es_events')" 'BEGIN { printf "%.0f", n / (e - s) }'
}
# best_of VAR... : the largest of the numbers given
best_of() { printf '%s\n' "$@" | sort -g | tail -1; }
median_of() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# Rounds alternate between the two sides, so that the machine's drift (it
# is a noisy VM) does not favour whichever ran first.
es_runs=() raw_runs=()
for _ in 1 2 3; do
	es_runs+=("$(replay "SELECT * FROM es_read_all(last, 1000)")")
	raw_runs+=("$(replay "SELECT $RAW_COLUMNS FROM es_events WHERE global_position > last ORDER BY global_position LIMIT 1000")")
done
row "replay 1M, pages of 1,000, in the server: es_read_all vs raw" "$(best_of "${es_runs[@]}")" "$(best_of "${raw_runs[@]}")" "events/s (best of 3)"
# The same pages fetched by a client, as a catch-up reader does (the
# positions are dense, so page k starts after position 1,000 k).
es_runs=() raw_runs=()
for _ in 1 2 3; do
	es_runs+=("$(printf '%s\n' '\set p random(0, 999) * 1000' 'SELECT * FROM es_read_all(:p, 1000);' | tps 1)")
	raw_runs+=("$(printf '%s\n' '\set p random(0, 999) * 1000' "SELECT $RAW_COLUMNS FROM es_events WHERE global_position > :p ORDER BY global_position LIMIT 1000;" | tps 1)")
done
row "pages of 1,000 to a client: es_read_all vs raw" "$(median_of "${es_runs[@]}")" "$(median_of "${raw_runs[@]}")" "pages/s (median of 3)"

es_log "reading a 100-event category among 1M events"
cat_es=$(echo "SELECT * FROM es_read_category('cat100', 0, 1000);" | tps 1)
cat_raw=$(echo "SELECT global_position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at FROM es_events WHERE es_category(stream_id) = 'cat100' AND global_position > 0 ORDER BY global_position LIMIT 1000;" | tps 1)
row "category of 100 events: es_read_category vs raw" "$cat_es" "$cat_raw" "reads/s"

es_log "es_read of 1,000 events with and without upcasters"
read_raw=$(echo "SELECT $RAW_COLUMNS FROM es_events WHERE stream_id = 'read-1' ORDER BY version;" | tps 1)
read_none=$(echo "SELECT * FROM es_read('read-1');" | tps 1)
# Upcasters for other types: a database of their own holding the same
# stream, measured in rounds alternating with this one.
createdb es_bench_up
psql -X -q -d es_bench_up -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE EXTENSION es;
SELECT es_append('read-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'AccountOpened', 'data', jsonb_build_object('name', 'x', 'n', g))) FROM generate_series(1, 1000) g));
VACUUM ANALYZE es_events;
CREATE FUNCTION other_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT data $$;
SELECT es_register_upcaster('Other' || g, 1, 'other_v1_to_v2(jsonb)') FROM generate_series(1, 20) g;
SQL
# in_server DB: microseconds per es_read of the stream, count(e.*) of 300 in a loop
in_server() {
	psql -X -q -At -d "$1" -c "DO \$\$ DECLARE t timestamptz := clock_timestamp(); n bigint; BEGIN FOR i IN 1..300 LOOP SELECT count(e.*) INTO n FROM es_read('read-1') e; END LOOP; RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - t) * 1e6 / 300); END \$\$;" 2>&1 | sed 's/.*NOTICE: *//'
}
none_runs=() other_runs=() none_us=() other_us=()
for _ in 1 2 3 4 5; do
	none_runs+=("$(echo "SELECT * FROM es_read('read-1');" | tps 1)")
	other_runs+=("$(echo "SELECT * FROM es_read('read-1');" | PGDATABASE=es_bench_up tps 1)")
	none_us+=("$(in_server es_bench)")
	other_us+=("$(in_server es_bench_up)")
done
read_none_rounds=$(median_of "${none_runs[@]}")
read_other=$(median_of "${other_runs[@]}")
none_best=$(printf '%s\n' "${none_us[@]}" | sort -g | head -1)
other_best=$(printf '%s\n' "${other_us[@]}" | sort -g | head -1)
UPCAST_OTHER="upcasters for 20 other types, in the server (count(e.*) of es_read, best of 5): $other_best us per 1,000-event read vs $none_best us without ($(awk -v a="$other_best" -v b="$none_best" 'BEGIN { printf "%.1f%%, %.0f ns per event", (a / b - 1) * 100, (a - b) }'))"
psql -X -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE FUNCTION opened_v1_to_v2_sql(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (data - 'name') || jsonb_build_object('owner', data->'name') $$;
CREATE FUNCTION opened_v2_to_v3_sql(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT data || '{"currency": "USD"}' $$;
SELECT es_register_upcaster('AccountOpened', 1, 'opened_v1_to_v2_sql(jsonb)');
SELECT es_register_upcaster('AccountOpened', 2, 'opened_v2_to_v3_sql(jsonb)');
SQL
read_sql=$(echo "SELECT * FROM es_read('read-1');" | tps 1)
psql -X -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE OR REPLACE FUNCTION opened_v1_to_v2_sql(data jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE
AS $$ BEGIN RETURN (data - 'name') || jsonb_build_object('owner', data->'name'); END $$;
CREATE OR REPLACE FUNCTION opened_v2_to_v3_sql(data jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE
AS $$ BEGIN RETURN data || '{"currency": "USD"}'; END $$;
SQL
read_plpgsql=$(echo "SELECT * FROM es_read('read-1');" | tps 1)
row "es_read 1,000 events, no upcasters vs raw SELECT" "$read_none" "$read_raw" "reads/s"
row "es_read to a client, upcasters for 20 other types vs none" "$read_other" "$read_none_rounds" "reads/s (median of 5)"
row "es_read, 2-step chain in SQL vs no upcasting" "$read_sql" "$read_none" "reads/s"
row "es_read, 2-step chain in PL/pgSQL vs no upcasting" "$read_plpgsql" "$read_none" "reads/s"
per_event() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (1e6 / a - 1e6 / b) / 1000 }'; }
UPCAST_COST="per-event cost of the 2-step chain: SQL $(per_event "$read_sql" "$read_none") us, PL/pgSQL $(per_event "$read_plpgsql" "$read_none") us"

es_log "es_wait wake-up latency (1,000 commits)"
psql -X -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE FUNCTION es_bench_wait_latency(commits int, connstr text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    t0 timestamptz;
    lat float8[] := '{}';
BEGIN
    PERFORM dblink_connect('waiter', connstr);
    PERFORM dblink_connect('writer', connstr);
    FOR i IN 1..commits LOOP
        last := (SELECT max(global_position) FROM es_events);
        PERFORM dblink_send_query('waiter', format('SELECT es_wait(%s, 5000)', last));
        PERFORM pg_sleep(0.002);    -- the waiter is asleep by now
        PERFORM * FROM dblink('writer', format('SELECT es_append(%L, NULL, %L, %L)', 'wait-1', 'Tick', '{}')) AS a(v bigint);
        t0 := clock_timestamp();
        PERFORM * FROM dblink_get_result('waiter') AS r(p bigint);
        PERFORM * FROM dblink_get_result('waiter') AS r(p bigint);
        lat := lat || extract(epoch FROM clock_timestamp() - t0) * 1000;
    END LOOP;
    PERFORM dblink_disconnect('waiter');
    PERFORM dblink_disconnect('writer');
    RETURN (SELECT format('median %s ms, p99 %s ms over %s commits',
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3),
        round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3), commits) FROM unnest(lat) x);
END
$$;
SQL
WAIT_LATENCY=$(psql -X -q -At -c "SELECT es_bench_wait_latency(1000, 'dbname=es_bench host=$PGHOST port=$PGPORT')")
es_cluster_stop

es_log "appends at 8 clients without preloading (no registry: advisory-lock fallback)"
ES_PRELOAD=0 start
# es.notify off on both sides: without the worker every append would also
# NOTIFY from its own transaction, which is a different cost.
psql -X -q -c "LOAD 'es'" -c "ALTER SYSTEM SET es.notify = off" -c "SELECT pg_reload_conf()" >/dev/null
without_registry=$(append_script | tps 8 -D run=4)
es_cluster_stop
row "append, 8 clients: registry vs none (not preloaded), notify off" "$notify_off" "$without_registry" "events/s"

es_log "results (ratio = first / second; sync_commit on, fsync on)"
printf '%-58s %12s %12s %8s  %s\n' "benchmark" "first" "second" "ratio" "unit"
printf '%s\n' "${ROWS[@]}"
echo "$UPCAST_COST"
echo "$UPCAST_OTHER"
echo "es_wait wake-up, from an append's COMMIT returning to the waiter's result (through dblink): $WAIT_LATENCY"
