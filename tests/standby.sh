#!/usr/bin/env bash
# tests/standby.sh — reads work on a hot standby; appends are refused there.
#
# Takes a base backup of the running throwaway cluster (PG* variables, as set
# by tests/lib.sh es_cluster_start), starts it as a hot standby in a
# directory of its own (its own socket, stopped and removed on exit), and
# checks on the standby: es_read, es_read_backward, es_stream_version, es_load,
# es_read_all, es_read_category (upcast, as on the primary), es_wait (which
# polls there and sees an event that arrives by replication), and that
# es_append fails with SQLSTATE 25006.
set -euo pipefail

bin=${ES_PG_BIN:-/usr/lib/postgresql/${ES_PG_MAJOR:-15}/bin}
primary_host=$PGHOST
dir=$(mktemp -d /tmp/es-standby.XXXXXX)
chmod 755 "$dir"
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"

cleanup() {
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
	psql -X -q -h "$primary_host" -d postgres -c "DROP DATABASE IF EXISTS es_standby_test" \
		-c "DROP ROLE IF EXISTS es_standby_reader" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS es_standby_test" -c "CREATE DATABASE es_standby_test"
psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d es_standby_test <<'SQL'
CREATE EXTENSION es;
CREATE FUNCTION opened_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT data || '{"v": 2}' $$;
SELECT es_append('acct-1', 0, 'Opened', '{}');
SELECT es_register_upcaster('Opened', 1, 'opened_v1_to_v2(jsonb)');
SELECT es_append('acct-1', 1, '[{"type": "Deposited", "data": {"n": 1}}, {"type": "Deposited", "data": {"n": 2}}]');
CREATE FUNCTION acct_apply(state jsonb, e es_event) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('sum', coalesce((state->>'sum')::int, 0) + coalesce((e.data->>'n')::int, 0)) $$;
SELECT es_register_aggregate('acct', 'acct_apply(jsonb, es_event)');
-- a (forged) current snapshot at version 2 shows that loads there start from it
SELECT es_snapshot_save('acct-1', 2, '{"sum": 100}');
-- a reader role, with README's grants: reads on the standby go through
-- row-level security and upcast as the reader there too
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'es_standby_reader') THEN
        CREATE ROLE es_standby_reader;
    END IF;
END $$;
GRANT SELECT ON es_events, es_streams TO es_standby_reader;
SQL

as_postgres "$bin/pg_basebackup" -h "$primary_host" -U postgres -D "$dir/data" -R -X stream >/dev/null
{
	echo "unix_socket_directories = '$dir'"
	echo "hot_standby = on"
} | as_postgres tee -a "$dir/data/postgresql.conf" >/dev/null
as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
	{ cat "$dir/server.log" >&2; exit 1; }

standby() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -d es_standby_test "$@"; }

failed=0
check() {
	local what=$1 expected=$2 actual=$3
	if [ "$actual" = "$expected" ]; then
		echo "ok: $what"
	else
		echo "FAIL: $what: expected '$expected', got '$actual'"
		failed=1
	fi
}

check "the standby is in recovery" t "$(standby -c 'SELECT pg_is_in_recovery()')"
check "es_read" "1|2|{\"v\": 2};2|1|{\"n\": 1};3|1|{\"n\": 2}" \
	"$(standby -c "SELECT string_agg(version || '|' || schema_version || '|' || data, ';' ORDER BY version) FROM es_read('acct-1')")"
check "es_read_backward" "3,2,1" "$(standby -c "SELECT string_agg(version::text, ',') FROM es_read_backward('acct-1')")"
check "es_stream_version" "3" "$(standby -c "SELECT es_stream_version('acct-1')")"
check "es_read_all (upcast)" "1,2,3 2" \
	"$(standby -c "SELECT string_agg(global_position::text, ',' ORDER BY global_position) || ' ' || max(schema_version) FILTER (WHERE event_type = 'Opened') FROM es_read_all(0)")"
check "es_read_category" "3" "$(standby -c "SELECT count(*) FROM es_read_category('acct')")"
check "es_load (from the newest current snapshot)" '{"sum": 102}|3' "$(standby -c "SELECT state::text || '|' || version FROM es_load('acct-1')")"
check "es_load at a version below the snapshot" '{"sum": 0}|1' "$(standby -c "SELECT state::text || '|' || version FROM es_load('acct-1', 1)")"
check "es_read as a reader role" "1|2;2|1;3|1" \
	"$(standby -c "SET ROLE es_standby_reader" -c "SELECT string_agg(version || '|' || schema_version, ';' ORDER BY version) FROM es_read('acct-1')")"
check "es_read_all as a reader role" "3" \
	"$(standby -c "SET ROLE es_standby_reader" -c "SELECT count(*) FROM es_read_all(0)")"
check "es_append is refused" "25006" \
	"$(standby -c "DO \$\$ BEGIN PERFORM es_append('acct-1', 3, 'X', '{}'); EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | grep -o '[0-9A-Z]\{5\}$')"

# es_wait on the standby wakes for an event that arrives by replication.
( sleep 0.5; psql -X -q -o /dev/null -d es_standby_test -c "SELECT es_append('acct-1', 3, 'Withdrawn', '{}')" ) &
check "es_wait sees a replicated event" "4" "$(standby -c "SELECT es_wait(3, 10000)")"
wait
check "es_read_all after it" "4" "$(standby -c "SELECT string_agg(global_position::text, ',') FROM es_read_all(3)")"

exit $failed
