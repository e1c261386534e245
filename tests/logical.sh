#!/usr/bin/env bash
# tests/logical.sh — es_events published by logical replication to a
# subscriber that keeps its own inline read model.
#
# Starts two throwaway clusters of its own (a publisher with
# wal_level = logical and a subscriber, sockets in a new temporary directory,
# stopped and removed on exit), both with es preloaded.  On the publisher a
# writer with only EXECUTE on es_append appends; on the subscriber an inline
# projection registered by an unprivileged role gets every replicated event of
# its types once, runs as that role (not as the subscription's owner), and its
# read model equals SQL over the subscriber's es_events.
set -euo pipefail

bin=${ES_PG_BIN:-/usr/lib/postgresql/${ES_PG_MAJOR:-15}/bin}
dir=$(mktemp -d /tmp/es-logical.XXXXXX)
chmod 755 "$dir"
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"

cleanup() {
	if [ "${failed:-0}" != 0 ]; then
		echo "--- subscriber log (tail)"
		tail -20 "$dir/sub.log" 2>/dev/null || true
	fi
	for node in pub sub; do
		if [ -f "$dir/$node/postmaster.pid" ]; then
			as_postgres "$bin/pg_ctl" -D "$dir/$node" -m immediate -w stop >/dev/null 2>&1 || true
		fi
	done
	rm -rf "$dir"
}
trap cleanup EXIT

start_node() {
	local node=$1 port=$2
	shift 2
	as_postgres "$bin/initdb" -D "$dir/$node" -U postgres --auth=trust --encoding=UTF8 \
		--locale=C.UTF-8 >"$dir/$node.initdb.log" 2>&1 || { cat "$dir/$node.initdb.log" >&2; return 1; }
	{
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "port = $port"
		echo "shared_preload_libraries = 'es'"
		local setting
		for setting in "$@"; do echo "$setting"; done
	} | as_postgres tee -a "$dir/$node/postgresql.conf" >/dev/null
	as_postgres "$bin/pg_ctl" -D "$dir/$node" -l "$dir/$node.log" -w -t 60 start >/dev/null ||
		{ cat "$dir/$node.log" >&2; return 1; }
}

start_node pub 5433 "wal_level = logical"
start_node sub 5434

pub() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -p 5433 -U postgres -d shop "$@"; }
sub() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -p 5434 -U postgres -d shop "$@"; }
failed=0
fail() { echo "FAIL: $*"; failed=1; }

for port in 5433 5434; do
	psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres -d postgres -c "CREATE DATABASE shop"
done

pub -o /dev/null <<'SQL'
CREATE EXTENSION es;
CREATE ROLE writer;
GRANT EXECUTE ON FUNCTION es_append(text, bigint, text, jsonb, jsonb, uuid), es_append(text, bigint, jsonb) TO writer;
CREATE PUBLICATION es_pub FOR TABLE es_events, es_streams;
SQL

sub <<'SQL'
CREATE EXTENSION es;
CREATE ROLE balances_owner;
GRANT CREATE ON SCHEMA public TO balances_owner;
GRANT EXECUTE ON FUNCTION es_register_projection(text, regprocedure, text[], text, regprocedure)
    TO balances_owner;
GRANT INSERT, UPDATE, DELETE ON es_projections, es_projection_skipped TO balances_owner;
GRANT SELECT ON es_events TO balances_owner;
SET ROLE balances_owner;
CREATE TABLE balance (account text PRIMARY KEY, amount bigint NOT NULL, events int NOT NULL);
CREATE TABLE handled_as (role name PRIMARY KEY);
-- logical replication's apply worker runs with an empty search_path, so a
-- handler that names tables unqualified needs a search_path of its own
CREATE FUNCTION balance_handle(e es_event) RETURNS void LANGUAGE sql SET search_path = public AS $$
    INSERT INTO balance VALUES (e.stream_id, (e.data->>'amount')::bigint, 1)
    ON CONFLICT (account) DO UPDATE
        SET amount = balance.amount + EXCLUDED.amount, events = balance.events + 1;
    INSERT INTO handled_as VALUES (current_user) ON CONFLICT DO NOTHING;
$$;
SELECT es_register_projection('balances', 'balance_handle(es_event)', ARRAY['Deposited'], 'inline', NULL);
RESET ROLE;
SQL
sub -c "CREATE SUBSCRIPTION es_sub CONNECTION 'host=$dir port=5433 user=postgres dbname=shop' PUBLICATION es_pub WITH (copy_data = false)"

ready=0
for _ in $(seq 1 300); do
	[ "$(sub -c "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) = 2 FROM pg_subscription_rel")" = t ] &&
		{ ready=1; break; }
	sleep 0.1
done
[ $ready = 1 ] || { fail "the subscription never became ready"; exit 1; }

# 20 accounts, 10 deposits and 5 notes each, in one-event and batch appends
pub -o /dev/null <<'SQL'
SET ROLE writer;
SELECT count(es_append('acct-' || a, NULL, 'Deposited', jsonb_build_object('amount', a * 10 + i)))
FROM generate_series(1, 20) a, generate_series(1, 8) i;
SELECT count(es_append('acct-' || a, NULL,
    jsonb_build_array(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', 1)),
                      jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', 2)),
                      jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb),
                      jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb),
                      jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb),
                      jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb),
                      jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb))))
FROM generate_series(1, 20) a;
SQL
head=$(pub -c "SELECT count(*) FROM es_events")
[ "$head" = 300 ] || fail "the publisher stored $head events, not 300"

arrived=0
for _ in $(seq 1 300); do
	[ "$(sub -c "SELECT count(*) FROM es_events")" = "$head" ] && { arrived=1; break; }
	sleep 0.1
done
[ $arrived = 1 ] || { fail "only $(sub -c "SELECT count(*) FROM es_events") of $head events arrived"; exit 1; }

diff=$(sub -c "
    SELECT count(*) FROM (
        SELECT stream_id, sum((data->>'amount')::bigint) AS amount, count(*)::int AS events
        FROM es_events WHERE event_type = 'Deposited' GROUP BY stream_id
    ) expected FULL JOIN balance b ON b.account = expected.stream_id
    WHERE b.amount IS DISTINCT FROM expected.amount OR b.events IS DISTINCT FROM expected.events")
[ "$diff" = 0 ] || fail "$diff accounts of the subscriber's read model differ from its es_events"
deposits=$(sub -c "SELECT sum(events) FROM balance")
[ "$deposits" = 200 ] || fail "the handler ran $deposits times for 200 replicated deposits"
roles=$(sub -c "SELECT string_agg(role, ',' ORDER BY role) FROM handled_as")
[ "$roles" = balances_owner ] || fail "the handler ran as '$roles', not as the projection's owner"
[ "$(sub -c "SELECT es_stream_version('acct-7')")" = 15 ] || fail "es_stream_version on the subscriber"
[ "$(sub -c "SELECT count(*) FROM es_read('acct-7', 1, 100)")" = 15 ] || fail "es_read on the subscriber"

[ $failed = 0 ] || exit 1
echo "logical replication: $head events arrived; the subscriber's inline projection handled the 200 deposits once each, as balances_owner, and equals SQL over its es_events"
