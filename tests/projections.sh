#!/usr/bin/env bash
# tests/projections.sh — async projections fed by the worker.
#
# In a database created after the server started, with default settings:
# async projections registered by an unprivileged role are fed by the
# worker as that role (never a superuser); a handler that tries to write a
# table only a superuser may write fails in the worker and stops that
# projection only; a failing projection never holds back the others;
# es_projection_wait is woken by the worker's progress; while 8 clients
# append, the lag stays small and the read model ends equal to one computed
# in SQL; kill -9 of the worker in the middle of a catch-up (the server
# restarts) applies no event twice and loses none; an async rebuild
# replays in the background; a manual rebuild reports its progress; pg_dump
# and pg_restore bring read models and checkpoints as they were, and the
# restore applies nothing again.
#
# Needs a running server with es preloaded (PG* variables, as set by
# tests/lib.sh).
set -euo pipefail

failed=0
fail() { echo "FAIL: $*"; failed=1; }
q() { psql -X -At -v ON_ERROR_STOP=1 "$@"; }
db=es_pj

# wait_for DB SQL [SECONDS]: until SQL returns t.
wait_for() {
	local tries=$((${3:-30} * 10))
	for _ in $(seq 1 "$tries"); do
		[ "$(q -d "$1" -c "$2" 2>/dev/null || true)" = t ] && return 0
		sleep 0.1
	done
	return 1
}

q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS ${db}_restored" >/dev/null
q -d postgres -c "CREATE DATABASE $db" >/dev/null
q -d "$db" >/dev/null <<'SQL'
CREATE EXTENSION es;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'es_pj_owner') THEN CREATE ROLE es_pj_owner; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'es_pj_writer') THEN CREATE ROLE es_pj_writer LOGIN; END IF;
END $$;
-- README's delegation grants, and a writer's
GRANT EXECUTE ON FUNCTION es_register_projection(text, regprocedure, text[], text, regprocedure),
                          es_unregister_projection(text), es_projection_rebuild(text) TO es_pj_owner;
GRANT INSERT, UPDATE, DELETE ON es_projections, es_projection_skipped TO es_pj_owner;
GRANT SELECT ON es_events TO es_pj_owner;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid),
                          es_append(text, bigint, jsonb) TO es_pj_writer;
GRANT CREATE ON SCHEMA public TO es_pj_owner;
CREATE TABLE superuser_only (x int);

SET ROLE es_pj_owner;
CREATE TABLE summary (stream_id text PRIMARY KEY, events int NOT NULL, total numeric NOT NULL);
CREATE TABLE handler_roles (current_role_name text, session_role_name text, PRIMARY KEY (current_role_name, session_role_name));
CREATE FUNCTION summary_handler(e es_event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO summary VALUES (e.stream_id, 1, (e.data->>'amount')::numeric)
    ON CONFLICT (stream_id) DO UPDATE SET events = summary.events + 1, total = summary.total + EXCLUDED.total;
    INSERT INTO handler_roles VALUES (current_user, session_user) ON CONFLICT DO NOTHING;
$$;
CREATE FUNCTION summary_reset() RETURNS void LANGUAGE sql AS 'DELETE FROM summary';
CREATE TABLE fragile_seen (n int);
CREATE FUNCTION fragile_handler(e es_event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'Bad' THEN RAISE EXCEPTION 'fragile cannot take %', e.data; END IF;
    INSERT INTO fragile_seen VALUES (1);
END $$;
CREATE FUNCTION sneaky_handler(e es_event) RETURNS void LANGUAGE sql AS 'INSERT INTO superuser_only VALUES (1)';
SELECT es_register_projection('summary', 'summary_handler(es_event)', ARRAY['Deposited'], 'async', 'summary_reset()');
SELECT es_register_projection('fragile', 'fragile_handler(es_event)', NULL, 'async');
SELECT es_register_projection('sneaky', 'sneaky_handler(es_event)', ARRAY['Sneak'], 'async');
RESET ROLE;
SQL

# The worker feeds them, as the registering role.
q -d "$db" -U es_pj_writer -c "SELECT es_append('acct-0', NULL, 'Deposited', '{\"amount\": 5}')" \
	-c "SELECT es_append('acct-0', NULL, 'Bad', '{}')" \
	-c "SELECT es_append('acct-0', NULL, 'Sneak', '{}')" \
	-c "SELECT es_append('acct-0', NULL, 'Deposited', '{\"amount\": 6}')" >/dev/null
wait_for "$db" "SELECT count(*) = 2 FROM es_projections WHERE state = 'failed'" 10 ||
	fail "fragile and sneaky did not fail: $(q -d "$db" -c "SELECT name, state, last_error FROM es_projections")"
wait_for "$db" "SELECT total = 11 FROM summary WHERE stream_id = 'acct-0'" 10 ||
	fail "summary was not fed: $(q -d "$db" -c "SELECT * FROM es_projection_status")"
roles=$(q -d "$db" -c "SELECT string_agg(current_role_name || '/' || session_role_name, ',') FROM handler_roles")
case "$roles" in
	es_pj_owner/*) ;;
	*) fail "the worker ran the handler as '$roles', not as es_pj_owner" ;;
esac
[ "$(q -d "$db" -c "SELECT count(*) FROM handler_roles WHERE current_role_name <> 'es_pj_owner'")" = 0 ] ||
	fail "a handler ran as another role: $roles"
sneaky=$(q -d "$db" -c "SELECT state || ': ' || last_error FROM es_projections WHERE name = 'sneaky'")
[ "$sneaky" = "failed: permission denied for table superuser_only" ] || fail "sneaky: $sneaky"
[ "$(q -d "$db" -c "SELECT count(*) FROM superuser_only")" = 0 ] || fail "sneaky wrote superuser_only"
fragile=$(q -d "$db" -c "SELECT state || ' at ' || (failing_position = (SELECT global_position FROM es_events WHERE event_type = 'Bad')) || ', seen ' || (SELECT count(*) FROM fragile_seen) FROM es_projections WHERE name = 'fragile'")
[ "$fragile" = "failed at true, seen 1" ] || fail "fragile: $fragile"
echo "worker: summary fed as $roles; sneaky: $sneaky; fragile: $fragile"

# es_projection_wait is woken by the worker's progress, not a timer.
q -d "$db" -c "SELECT es_projection_skip('fragile')" >/dev/null
start=$(date +%s%N)
ok=$(q -d "$db" -c "SELECT es_append('acct-0', NULL, 'Deposited', '{\"amount\": 1}')" \
	-c "SELECT es_projection_wait('summary', (SELECT max(global_position) FROM es_events), 5000)" 2>&1 | tail -1)
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ok" = t ] || fail "es_projection_wait: $ok"
[ "$ms" -lt 900 ] || fail "append + es_projection_wait took $ms ms"
echo "append + es_projection_wait: $ok in $ms ms"

# 8 clients append for 4 s; the lag is sampled meanwhile.
cat >"$PGHOST/pj_append.sql" <<'SQL'
\set s random(1, 200)
SELECT es_append('acct-' || :s, NULL, 'Deposited', '{"amount": 2}');
SQL
"$ES_PG_BIN/pgbench" -n -c 8 -j 2 -T 4 -f "$PGHOST/pj_append.sql" -U es_pj_writer "$db" >"$PGHOST/pj_bench.out" 2>&1 &
bench=$!
max_lag=0
samples=0
while kill -0 $bench 2>/dev/null; do
	lag=$(q -d "$db" -c "SELECT lag FROM es_projection_status WHERE name = 'summary'" 2>/dev/null || echo 0)
	[ "${lag:-0}" -gt "$max_lag" ] && max_lag=$lag
	samples=$((samples + 1))
	sleep 0.2
done
wait $bench || fail "pgbench failed: $(cat "$PGHOST/pj_bench.out")"
head=$(q -d "$db" -c "SELECT max(global_position) FROM es_events")
[ "$(q -d "$db" -c "SELECT es_projection_wait('summary', $head, 20000)")" = t ] || fail "summary did not catch up"
check_summary() {
	q -d "$1" -c "SELECT count(*) FROM (
		SELECT stream_id, count(*)::int AS events, sum((data->>'amount')::numeric) AS total
		  FROM es_events WHERE event_type = 'Deposited' GROUP BY stream_id
		EXCEPT SELECT stream_id, events, total FROM summary) d" \
	  -c "SELECT count(*) FROM summary" -c "SELECT count(DISTINCT stream_id) FROM es_events WHERE event_type = 'Deposited'" | tr '\n' ' '
}
res=$(check_summary "$db")
set -- $res
[ "$1" = 0 ] && [ "$2" = "$3" ] || fail "summary differs from es_events: $res"
echo "8 clients ($(grep -o 'tps = [0-9.]*' "$PGHOST/pj_bench.out" | head -1)): max lag $max_lag events in $samples samples; read model equals SQL over es_events"

# kill -9 of the worker in the middle of a catch-up: nothing twice, nothing lost.
q -d "$db" >/dev/null <<'SQL'
SET ROLE es_pj_owner;
CREATE TABLE slow_counts (stream_id text PRIMARY KEY, n int NOT NULL);
-- slow while the worker is killed, then fast, so that the catch-up after the
-- kills takes seconds, not minutes, on a slow machine
CREATE TABLE slow_delay (seconds float8 NOT NULL);
INSERT INTO slow_delay VALUES (0.002);
CREATE FUNCTION slow_handler(e es_event) RETURNS void LANGUAGE sql AS $$
    SELECT pg_sleep(seconds) FROM slow_delay;
    INSERT INTO slow_counts VALUES (e.stream_id, 1) ON CONFLICT (stream_id) DO UPDATE SET n = slow_counts.n + 1;
$$;
SELECT es_register_projection('slow', 'slow_handler(es_event)', ARRAY['Deposited'], 'async');
RESET ROLE;
SQL
wait_for "$db" "SELECT position > 0 FROM es_projections WHERE name = 'slow'" 20 || fail "slow never started"
# One slow projection does not starve the others: while slow catches up,
# summary handles a new event within one of slow's batches (about 2 s),
# not after slow's whole backlog (about a minute).
t0=$(date +%s%N)
q -d "$db" -c "SELECT es_append('acct-starve', NULL, 'Deposited', '{\"amount\": 1}')" >/dev/null
head=$(q -d "$db" -c "SELECT max(global_position) FROM es_events")
[ "$(q -d "$db" -c "SELECT es_projection_wait('summary', $head, 20000)")" = t ] ||
	fail "summary starved behind slow"
slow_lag=$(q -d "$db" -c "SELECT lag FROM es_projection_status WHERE name = 'slow'")
[ "$slow_lag" -gt 1000 ] || fail "slow was not behind while summary was fed (lag $slow_lag): the check above proves nothing"
echo "while slow is $slow_lag events behind, summary handled a new event in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
for round in 1 2 3; do
	# kill it while it is making progress, in the middle of a batch
	before=$(q -d "$db" -c "SELECT position FROM es_projections WHERE name = 'slow'")
	# (a projection that has caught up with every event cannot move on)
	wait_for "$db" "SELECT position > $before OR position >= (SELECT max(global_position) FROM es_events)
		FROM es_projections WHERE name = 'slow'" 20 ||
		fail "round $round: slow made no progress after the restart"
	sleep 0.$((RANDOM % 3 + 1))
	pid=$(q -d "$db" -c "SELECT pid FROM es_worker_status")
	before=$(q -d "$db" -c "SELECT position FROM es_projections WHERE name = 'slow'")
	kill -9 "$pid"
	sleep 1
	for _ in $(seq 1 100); do q -d "$db" -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
	echo "round $round: killed worker $pid at checkpoint $before"
	sleep 0.5
done
q -d "$db" -c "UPDATE slow_delay SET seconds = 0" >/dev/null
head=$(q -d "$db" -c "SELECT max(global_position) FROM es_events")
if [ "$(q -d "$db" -c "SELECT es_projection_wait('slow', $head, 120000)")" = t ]; then
	diff=$(q -d "$db" -c "SELECT count(*) FROM (
		SELECT stream_id, count(*)::int FROM es_events WHERE event_type = 'Deposited' GROUP BY stream_id
		EXCEPT SELECT stream_id, n FROM slow_counts) d")
	if [ "$diff" = 0 ]; then
		echo "kill -9 of the worker three times during a catch-up: slow resumed by itself, every event exactly once"
	else
		fail "after kill -9: $diff streams counted wrongly by slow (exactly once broken)"
	fi
else
	fail "slow did not catch up within 120 s of the kills: $(q -d "$db" -c "SELECT * FROM es_projection_status WHERE name = 'slow'")"
fi

# An async rebuild replays in the background.
res=$(PGOPTIONS='-c client_min_messages=warning' q -d "$db" -c "SELECT es_projection_rebuild('summary')")
wait_for "$db" "SELECT state = 'running' AND lag = 0 FROM es_projection_status WHERE name = 'summary'" 30 ||
	fail "async rebuild did not finish: $(q -d "$db" -c "SELECT * FROM es_projection_status WHERE name = 'summary'")"
res2=$(check_summary "$db")
set -- $res2
[ "$1" = 0 ] && [ "$2" = "$3" ] || fail "summary after its rebuild differs: $res2"
echo "async rebuild of summary: $res events replayed in the background; equals SQL over es_events"

# A manual rebuild reports progress.
q -d "$db" >/dev/null <<'SQL'
SET ROLE es_pj_owner;
CREATE TABLE report (n int);
CREATE FUNCTION report_handler(e es_event) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(0.001) WHERE e.global_position % 10 = 0; INSERT INTO report VALUES (1) $$;
CREATE FUNCTION report_reset() RETURNS void LANGUAGE sql AS 'DELETE FROM report';
SELECT es_register_projection('report', 'report_handler(es_event)', NULL, 'manual', 'report_reset()');
RESET ROLE;
SQL
out=$(q -d "$db" -c "SELECT es_projection_rebuild('report')" 2>&1)
total=$(q -d "$db" -c "SELECT count(*) FROM es_events")
echo "$out" | grep -q "NOTICE:  projection \"report\" rebuilt: $total events in" || fail "no final NOTICE: $out"
[ "$(q -d "$db" -c "SELECT count(*) FROM report")" = "$total" ] || fail "report rebuild count"
echo "manual rebuild: $(echo "$out" | grep -c 'events replayed') progress NOTICEs, then: $(echo "$out" | grep rebuilt | sed 's/.*NOTICE:  //')"

# Dump and restore: read models, checkpoints and registrations as they were, nothing applied again.
q -d "$db" >/dev/null <<'SQL'
CREATE TABLE inline_counts (n int);
CREATE FUNCTION inline_handler(e es_event) RETURNS void LANGUAGE sql AS 'INSERT INTO inline_counts VALUES (1)';
SELECT es_register_projection('inline_count', 'inline_handler(es_event)', NULL, 'inline');
SELECT es_append('acct-dump', NULL, 'Deposited', '{"amount": 1}');
SQL
head=$(q -d "$db" -c "SELECT max(global_position) FROM es_events")
for p in summary slow; do q -d "$db" -c "SELECT es_projection_wait('$p', $head, 10000)" >/dev/null; done
snapshot() {
	q -d "$1" -c "SELECT md5(string_agg(name || mode || position || state || coalesce(last_error, '') || owner, ',' ORDER BY name)) FROM es_projections" \
	  -c "SELECT md5(string_agg(s::text, ',' ORDER BY s::text)) FROM summary s" \
	  -c "SELECT md5(string_agg(s::text, ',' ORDER BY s::text)) FROM slow_counts s" \
	  -c "SELECT count(*) FROM inline_counts" -c "SELECT count(*) FROM es_projection_skipped" | tr '\n' ' '
}
# (everything is fed: the worker writes nothing while this is dumped)
before=$(snapshot "$db")
"$ES_PG_BIN/pg_dump" -Fc -d "$db" -f "$PGHOST/pj.dump"
q -d postgres -c "CREATE DATABASE ${db}_restored" >/dev/null
"$ES_PG_BIN/pg_restore" -d "${db}_restored" "$PGHOST/pj.dump" 2>"$PGHOST/pj_restore.err" ||
	fail "pg_restore: $(cat "$PGHOST/pj_restore.err")"
sleep 1
after=$(snapshot "${db}_restored")
[ "$before" = "$after" ] || fail "restored projections differ: before '$before', after '$after'"
echo "pg_dump/pg_restore: projections, checkpoints, read models identical; nothing applied twice"

q -d postgres -c "DROP DATABASE $db" -c "DROP DATABASE ${db}_restored" >/dev/null || fail "cleanup"
exit $failed
