#!/usr/bin/env bash
# bench/run.sh — the es benchmark suite (not run by CI).  See bench/README.md.
#
# One run, one throwaway cluster: es against plain-PostgreSQL baselines,
# printed as ratios (es / baseline, higher is better for es) with the raw
# throughputs beside them.
#
# Environment:
#   ES_BENCH_SECONDS=15       duration of each measured point, in seconds
#   ES_BENCH_CLIENTS="1 4 8"  client counts
#   ES_BENCH_SYNC="on off"    synchronous_commit values for the append points
#   ES_BENCH_STREAMS=100      streams per client that appends pick from
#   ES_BENCH_ONLY="append batch read growth"
#                             the groups to run (default: all four)
#   ES_BENCH_REPEAT=1         append, batch, read: run each point this many
#                             times (interleaved) and keep the best
#   ES_BENCH_BIG=1            growth: also measure with 10M stored events
#                             (preloading them takes ~7-10 more minutes)
#   ES_BENCH_SKIP_BUILD=1     use the installed es; skip es_setup (packages,
#                             build, make install)
#   MESSAGE_DB_DIR=path       a message-db checkout: install its database
#                             scripts into database message_db of the same
#                             cluster and measure write_message and
#                             get_category_messages beside es (else: no
#                             message-db column)
#   ES_BENCH_PERF=1           before the growth group, perf-record one backend
#                             (1 client) during es_append, the PL/pgSQL and
#                             raw appends (synchronous_commit off), es_read and
#                             the plain SELECT; print the hottest functions

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/lib.sh
source "$BENCH_DIR/../tests/lib.sh"

DURATION=${ES_BENCH_SECONDS:-15}
CLIENTS=${ES_BENCH_CLIENTS:-1 4 8}
SYNCS=${ES_BENCH_SYNC:-on off}
ONLY=${ES_BENCH_ONLY:-append batch read growth}
BIG=${ES_BENCH_BIG:-0}
REPEAT=${ES_BENCH_REPEAT:-1}
STREAMS=${ES_BENCH_STREAMS:-100}
PGBENCH=$ES_PG_BIN/pgbench
BATCH_SIZE=100

wants() { [[ " $ONLY " == *" $1 "* ]]; }

[ -n "${ES_BENCH_SKIP_BUILD:-}" ] || es_setup

ES_VERSION="es $(git -C "$BENCH_DIR/.." describe --always --dirty 2>/dev/null || echo '?')\
 (installed es.so: $(md5sum "$("$ES_PG_BIN/pg_config" --pkglibdir)/es.so" | cut -c1-12),\
 $(date -r "$("$ES_PG_BIN/pg_config" --pkglibdir)/es.so" '+%F %T'))"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

es_log "starting the benchmark cluster"
# fsync and synchronous_commit stay at their defaults.  Larger shared_buffers
# so the 1M/10M stores fit; max_wal_size and checkpoint_timeout large enough
# that no checkpoint starts inside a measured point: run.sh checkpoints before
# every point instead, so every point starts from the same state.
es_cluster_start 'shared_buffers = 1GB' 'max_wal_size = 8GB' 'checkpoint_timeout = 30min'

WORK=$ES_CLUSTER_DIR/bench
mkdir -p "$WORK"
psql_do() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# wait_for_worker DB: as a user would have it, a database created after the
# server started, es installed there, no es.* setting: the launcher gives it
# its own worker within about a second, which sends the coalesced
# notifications.  Without one, every appending transaction NOTIFYs itself,
# which serialises commits on PostgreSQL's notification queue lock (about
# half the append throughput at 8 clients).
NOTIFY_MODE="es has no background worker"
wait_for_worker() {
	local db=$1
	for _ in $(seq 100); do
		if [ -n "$(psql -X -At -d "$db" -c "SELECT pid FROM es_worker_status" 2>/dev/null)" ]; then
			NOTIFY_MODE="notifications sent by the database's es worker"
			return 0
		fi
		sleep 0.1
	done
	echo "warning: no es worker in $db: appends notify from their own transactions" >&2
	NOTIFY_MODE="notifications sent by the appending transactions (no worker)"
}

export PGDATABASE=es_bench
createdb es_bench
MDB=
if [ -n "${MESSAGE_DB_DIR:-}" ]; then
	# message-db's own installer, run as postgres against this cluster:
	# role message_store, database message_db, schema message_store, its
	# table, functions, indexes, views and grants.  Its functions name their
	# objects unqualified: the database gets the search_path its README asks
	# the message_store role to have.
	es_log "installing message-db $(cat "$MESSAGE_DB_DIR/database/VERSION.txt") from $MESSAGE_DB_DIR"
	DATABASE_NAME=message_db PGOPTIONS='-c client_min_messages=warning' \
		bash "$MESSAGE_DB_DIR/database/install.sh" >"$ES_CLUSTER_DIR/message-db-install.log" 2>&1 ||
		{ cat "$ES_CLUSTER_DIR/message-db-install.log" >&2; exit 1; }
	psql_do -d message_db -c 'ALTER DATABASE message_db SET search_path = message_store, public'
	MDB="message-db $(cat "$MESSAGE_DB_DIR/database/VERSION.txt")"
fi
psql_do -f "$BENCH_DIR/schema.sql" >/dev/null
wait_for_worker es_bench
psql_do -c 'VACUUM ANALYZE' >/dev/null

# The 100-event batch, one JSON array, sent as one parameter.
BATCH=$(printf '{"type": "Deposited", "data": {"amount": 100, "currency": "EUR"}},%.0s' \
	$(seq "$BATCH_SIZE"))
BATCH="[${BATCH%,}]"

# ---------------------------------------------------------------------------
# Measuring

declare -A TPS=()   # "<script> <clients> <sync>" -> transactions per second
RUN=0               # run tag: each run appends to streams of its own

# keep_best KEY TPS: TPS[KEY] = the best of its runs so far.
keep_best() {
	local old=${TPS[$1]:-0}
	TPS[$1]=$(awk -v a="$old" -v b="$2" 'BEGIN { print (b > a) ? b : a }')
}

# pgbench_point SCRIPT CLIENTS SYNC [pgbench options...]
#   Runs bench/SCRIPT.sql and keeps its tps in TPS["SCRIPT CLIENTS SYNC"]
#   (TPS["SCRIPT$POINT_TAG CLIENTS SYNC"] when POINT_TAG is set); POINT_OPTIONS:
#   more server settings for its sessions (-c name=value).
pgbench_point() {
	local script=$1 clients=$2 sync=$3 key="$1${POINT_TAG:-} $2 $3"
	shift 3
	local jobs=$((clients < 2 ? clients : 2))
	local out tps
	RUN=$((RUN + 1))
	psql_do -c CHECKPOINT
	if ! out=$(PGOPTIONS="-c synchronous_commit=$sync ${POINT_OPTIONS:-}" "$PGBENCH" -n -M prepared \
		-T "$DURATION" -c "$clients" -j "$jobs" -D run=$RUN -D n=0 -D streams="$STREAMS" "$@" \
		-f "$BENCH_DIR/$script.sql" 2>&1); then
		printf '%s\n' "$out" >&2
		echo "pgbench failed: $script, $clients clients" >&2
		return 1
	fi
	if ! grep -q '^number of failed transactions: 0 ' <<<"$out"; then
		printf '%s\n' "$out" >&2
		echo "failed transactions: $script, $clients clients" >&2
		return 1
	fi
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
	keep_best "$key" "$tps"
	printf '  %-18s clients=%-2s sync_commit=%-3s %10.1f tps  (%s)\n' "$script${POINT_TAG:-}" "$clients" \
		"$sync" "$tps" "$(sed -n 's/^latency average = //p' <<<"$out") avg latency"
}

# copy_point CLIENTS SYNC: COPY of BATCH_SIZE rows per transaction (copy_bench.c).
copy_point() {
	local clients=$1 sync=$2 tps
	RUN=$((RUN + 1))
	psql_do -c CHECKPOINT
	tps=$(PGOPTIONS="-c synchronous_commit=$sync" "$WORK/copy_bench" "$clients" "$DURATION" \
		"$BATCH_SIZE" "$RUN" "$STREAMS" | sed -n 's/^tps = //p')
	keep_best "copy $clients $sync" "$tps"
	printf '  %-18s clients=%-2s sync_commit=%-3s %10.1f tps\n' copy "$clients" "$sync" "$tps"
}

# ---------------------------------------------------------------------------
# Results: rows of the final table

ROWS=()   # "benchmark|clients|sync|es|baseline|unit|target"

# result NAME ES_KEY BASE_KEY CLIENTS SYNC MULTIPLIER UNIT TARGET
#   TARGET: minimum ratio, or "-" for none.
result() {
	local name=$1 es=${TPS[$2]:-} base=${TPS[$3]:-} clients=$4 sync=$5 mult=$6 unit=$7 target=$8
	[ -n "$es" ] && [ -n "$base" ] || return 0
	ROWS+=("$name|$clients|$sync|$(awk -v t="$es" -v m="$mult" 'BEGIN { printf "%.0f", t * m }')|$(awk -v t="$base" -v m="$mult" 'BEGIN { printf "%.0f", t * m }')|$unit|$target")
}

print_table() {
	local row name clients sync es base unit target ratio met
	printf '\n%-44s %7s %11s %12s %12s %-9s %7s %8s %4s\n' benchmark clients sync_commit es \
		baseline unit ratio target met
	printf '%s\n' "$(printf '%.0s-' {1..122})"
	for row in "${ROWS[@]}"; do
		IFS='|' read -r name clients sync es base unit target <<<"$row"
		ratio=$(awk -v a="$es" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
		met=-
		if [ "$target" != - ]; then
			met=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r >= t) ? "yes" : "NO" }')
			target=">=$target"
		fi
		printf '%-44s %7s %11s %12s %12s %-9s %7s %8s %4s\n' "$name" "$clients" "$sync" "$es" \
			"$base" "$unit" "$ratio" "$target" "$met"
	done
}

# Targets: es append >= 0.9x a raw INSERT at 8 clients with synchronous_commit
# on, >= 0.8x at 1 client with it off; faster than PL/pgSQL everywhere; a
# 100-event batch >= 0.5x COPY of the same rows; es_read of a 1,000-event
# stream at most 1.2x the time of the plain SELECT (throughput >= 0.83x);
# append throughput flat as the store grows (>= 0.9x the empty store's).
append_target() {
	case "$1/$2" in
		8/on) echo 0.90 ;;
		1/off) echo 0.80 ;;
		*) echo - ;;
	esac
}

# ---------------------------------------------------------------------------
# 1 + 2. Single-event appends: es vs raw INSERT vs PL/pgSQL

if wants append; then
	es_log "single-event appends: es_append vs raw INSERT vs PL/pgSQL (${DURATION}s per point)"
	for rep in $(seq "$REPEAT"); do
		for sync in $SYNCS; do
			for c in $CLIENTS; do
				for script in append_es append_raw append_pl append_es_exact append_pl_exact; do
					pgbench_point $script "$c" "$sync"
				done
				if [ -n "$MDB" ]; then
					PGDATABASE=message_db pgbench_point mdb_write_exact "$c" "$sync"
				fi
			done
		done
	done
	for sync in $SYNCS; do
		for c in $CLIENTS; do
			result "append 1 event (any) vs INSERT" "append_es $c $sync" "append_raw $c $sync" \
				"$c" "$sync" 1 events/s "$(append_target "$c" "$sync")"
		done
	done
	for sync in $SYNCS; do
		for c in $CLIENTS; do
			result "append 1 event (exact, 2 trips) vs INSERT" "append_es_exact $c $sync" \
				"append_raw $c $sync" "$c" "$sync" 1 events/s -
		done
	done
	for sync in $SYNCS; do
		for c in $CLIENTS; do
			result "append 1 event (any) vs PL/pgSQL" "append_es $c $sync" "append_pl $c $sync" \
				"$c" "$sync" 1 events/s 1.00
		done
	done
	for sync in $SYNCS; do
		for c in $CLIENTS; do
			result "append 1 event (exact) vs PL/pgSQL (exact)" "append_es_exact $c $sync" \
				"append_pl_exact $c $sync" "$c" "$sync" 1 events/s 1.00
		done
	done
	for sync in $SYNCS; do
		for c in $CLIENTS; do
			result "append 1 event (exact) vs message-db (exact)" "append_es_exact $c $sync" \
				"mdb_write_exact $c $sync" "$c" "$sync" 1 events/s 1.00
		done
	done
fi

# ---------------------------------------------------------------------------
# 3. Batches of 100 events: es vs INSERT ... SELECT vs COPY vs PL/pgSQL

if wants batch; then
	es_log "batch appends of $BATCH_SIZE events: es_append vs INSERT...SELECT vs COPY vs PL/pgSQL"
	gcc -O2 -I"$("$ES_PG_BIN/pg_config" --includedir)" "$BENCH_DIR/copy_bench.c" \
		-o "$WORK/copy_bench" -L"$("$ES_PG_BIN/pg_config" --libdir)" -lpq
	for rep in $(seq "$REPEAT"); do
		for c in $CLIENTS; do
			pgbench_point batch_es "$c" on -D batch="$BATCH"
			pgbench_point batch_raw_insert "$c" on
			copy_point "$c" on
			pgbench_point batch_pl "$c" on -D batch="$BATCH"
		done
	done
	for c in $CLIENTS; do
		result "batch of 100 vs COPY" "batch_es $c on" "copy $c on" "$c" on $BATCH_SIZE events/s 0.50
	done
	for c in $CLIENTS; do
		result "batch of 100 vs INSERT...SELECT" "batch_es $c on" "batch_raw_insert $c on" \
			"$c" on $BATCH_SIZE events/s -
	done
	for c in $CLIENTS; do
		result "batch of 100 vs PL/pgSQL batch" "batch_es $c on" "batch_pl $c on" "$c" on \
			$BATCH_SIZE events/s 1.00
	done
fi

# ---------------------------------------------------------------------------
# 4. Reading a 1,000-event stream: es_read vs SELECT ... ORDER BY version

if wants read; then
	es_log "reading a 1,000-event stream: es_read vs SELECT"
	# Fresh statistics: the appends above added many small streams; with the
	# statistics of the initial 10 read streams the planner would take
	# stream_id = $1 to match a tenth of the table and scan it sequentially.
	psql_do -c 'ANALYZE es_events'
	for rep in $(seq "$REPEAT"); do
		for c in $CLIENTS; do
			pgbench_point read_es "$c" on
			pgbench_point read_raw "$c" on
		done
	done
	for c in $CLIENTS; do
		result "es_read 1,000 events vs SELECT" "read_es $c on" "read_raw $c on" "$c" - 1000 \
			rows/s 0.83
	done

	# Category reads: 1M more events (bench/category_load.sql), category
	# "sparse" holding 1,000 of them spread evenly, "dense" 999,000; 100
	# events from a random position, 1 client.  A generic plan of the
	# category read once walked the primary key for the sparse one (0.02x).
	es_log "category reads, sparse (1,000 of 1M) and dense: es_read_category vs SELECT${MDB:+ vs $MDB}"
	base=$(psql -X -At -c 'SELECT coalesce(max(global_position), 0) FROM es_events')
	psql_do -v mdb=0 -f "$BENCH_DIR/category_load.sql"
	if [ -n "$MDB" ]; then
		mdb_base=$(psql -X -At -d message_db -c 'SELECT coalesce(max(global_position), 0) FROM message_store.messages')
		psql_do -d message_db -v mdb=1 -f "$BENCH_DIR/category_load.sql"
	fi
	for _ in $(seq "$REPEAT"); do
		for cat in sparse dense; do
			POINT_TAG=" $cat" pgbench_point category_es 1 on -D cat=$cat -D base="$base"
			# The baseline planned per call, its best case (category_raw.sql
			# says why).
			POINT_TAG=" $cat" POINT_OPTIONS="-c plan_cache_mode=force_custom_plan" \
				pgbench_point category_raw 1 on -D cat=$cat -D base="$base"
			if [ -n "$MDB" ]; then
				POINT_TAG=" $cat" PGDATABASE=message_db pgbench_point category_mdb 1 on \
					-D cat=$cat -D base="$mdb_base"
			fi
		done
		pgbench_point readall_rare_es 1 on -D base="$base"
		pgbench_point readall_rare_raw 1 on -D base="$base"
	done
	for cat in sparse dense; do
		result "es_read_category 100, $cat vs SELECT" "category_es $cat 1 on" \
			"category_raw $cat 1 on" 1 - 100 rows/s 0.90
		result "es_read_category 100, $cat vs message-db" "category_es $cat 1 on" \
			"category_mdb $cat 1 on" 1 - 100 rows/s 1.00
	done
	result "es_read_all 100, 1/1000 type vs SELECT" "readall_rare_es 1 on" \
		"readall_rare_raw 1 on" 1 - 100 rows/s -
	result "es_read_all 100, 1/1000 type vs category" "readall_rare_es 1 on" \
		"category_es sparse 1 on" 1 - 100 rows/s -
fi

# ---------------------------------------------------------------------------
# Optional: where the time goes (perf, as root)

# profile SCRIPT CLIENTS SYNC: perf record of the first pgbench backend while
# SCRIPT runs; prints the hottest functions, self and inclusive.
profile() {
	local script=$1 clients=$2 sync=$3 bench_pid pid data=$WORK/perf-$1.data
	RUN=$((RUN + 1))
	psql_do -c CHECKPOINT
	PGOPTIONS="-c synchronous_commit=$sync" "$PGBENCH" -n -M prepared -T $((DURATION + 3)) \
		-c "$clients" -j 1 -D run=$RUN -D n=0 -D streams="$STREAMS" -f "$BENCH_DIR/$script.sql" \
		>"$WORK/perf-$script.out" 2>&1 &
	bench_pid=$!
	pid=
	for _ in $(seq 50); do
		sleep 0.2
		pid=$(psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' LIMIT 1")
		[ -z "$pid" ] || break
	done
	if [ -z "$pid" ]; then
		wait "$bench_pid" || true
		echo "  $script: no pgbench backend found to profile" >&2
		return 0
	fi
	# perf stopped by SIGINT from timeout (in a process group of its own):
	# perf given a command to time instead may, when it fails, send SIGTERM
	# to its whole process group, this script included.
	timeout -s INT "$DURATION" perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" \
		-o "$data" >/dev/null 2>&1 || true
	wait "$bench_pid" || echo "  warning: pgbench failed while profiling $script" >&2
	echo "  $script, $clients client(s), synchronous_commit=$sync:" \
		"$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/perf-$script.out") tps; backend $pid"
	# (Written to files first: a pipe into head would end perf with SIGPIPE.)
	perf report -i "$data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.8 \
		>"$data.self" 2>/dev/null || true
	perf report -i "$data" --stdio --children --sort symbol -g none --percent-limit 2 \
		>"$data.children" 2>/dev/null || true
	echo "  -- self time (top 25; postgres is stripped: its static functions show as addresses)"
	grep -v -e '^#' -e '^$' "$data.self" | awk 'NR <= 25'
	echo "  -- inclusive time, user space, named functions (top 40)"
	grep -v -e '^#' -e '^$' -e '\[k\]' -e '] 0x0' "$data.children" | awk 'NR <= 40'
}

# Before the growth group, whose 10M events would crowd these tables out of
# shared_buffers.
if [ "${ES_BENCH_PERF:-0}" = 1 ]; then
	es_log "perf profiles of one backend, 1 client"
	profile append_es 1 off
	profile append_pl 1 off
	profile append_raw 1 off
	profile read_es 1 on
	profile read_raw 1 on
fi

# ---------------------------------------------------------------------------
# 5. Append throughput as the store grows: empty, 1M, (10M) stored events

# preload_to N: bulk-loads streams of 100 events until es_events holds about N
# events (and raw_events the same rows).
preload_to() {
	local target=$1 have streams first start=$SECONDS chunk=10000 from to
	have=$(psql -X -At -c 'SELECT count(*) FROM es_events')
	streams=$(((target - have) / 100))
	[ "$streams" -gt 0 ] || return 0
	first=$(psql -X -At -c "SELECT count(*) + 1 FROM es_streams WHERE stream_id LIKE 'load-%'")
	for ((from = first; from < first + streams; from += chunk)); do
		to=$((from + chunk - 1))
		[ "$to" -lt $((first + streams)) ] || to=$((first + streams - 1))
		psql_do -v first=$from -v last=$to -f "$BENCH_DIR/preload.sql"
	done
	psql_do -c 'VACUUM ANALYZE es_events, es_streams, raw_events'
	echo "  preloaded $((streams * 100)) events in $((SECONDS - start)) s; stored now:" \
		"es_events $(psql -X -At -c 'SELECT count(*) FROM es_events')," \
		"raw_events $(psql -X -At -c 'SELECT count(*) FROM raw_events')"
}

GROWTH_POINTS="1/off 8/on"
if wants growth; then
	es_log "append throughput as the store grows (database es_growth)"
	export PGDATABASE=es_growth
	createdb es_growth
	psql_do -c 'CREATE EXTENSION es' -f "$BENCH_DIR/raw_events.sql"
	wait_for_worker es_growth
	sizes="0 1000000"
	[ "$BIG" = 1 ] && sizes="$sizes 10000000"
	for size in $sizes; do
		preload_to "$size"
		for point in $GROWTH_POINTS; do
			c=${point%/*} sync=${point#*/}
			for script in append_es append_raw; do
				TPS["$script $c $sync"]=0   # not the best over all sizes
				pgbench_point $script "$c" "$sync"
				TPS["growth $script $c $sync $size"]=${TPS["$script $c $sync"]}
			done
		done
	done
	export PGDATABASE=es_bench
	for size in 1000000 10000000; do
		label=$((size / 1000000))M
		for point in $GROWTH_POINTS; do
			c=${point%/*} sync=${point#*/}
			result "append 1 event: $label stored vs empty" "growth append_es $c $sync $size" \
				"growth append_es $c $sync 0" "$c" "$sync" 1 events/s 0.90
			result "(raw INSERT: $label stored vs empty)" "growth append_raw $c $sync $size" \
				"growth append_raw $c $sync 0" "$c" "$sync" 1 events/s -
			result "append 1 event vs INSERT, $label stored" "growth append_es $c $sync $size" \
				"growth append_raw $c $sync $size" "$c" "$sync" 1 events/s -
		done
	done
fi

# ---------------------------------------------------------------------------

es_log "results"
echo "$ES_VERSION; $("$ES_PG_BIN/postgres" --version); $(nproc) cores;"\
	"${DURATION}s per point; $STREAMS streams per client; $NOTIFY_MODE;"\
	"${MDB:-no message-db};"\
	"load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ratio = es / baseline throughput (higher is better for es); es and baseline in the unit shown"
print_table
