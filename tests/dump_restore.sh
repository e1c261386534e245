#!/usr/bin/env bash
# tests/dump_restore.sh — events, streams and the upcaster registry survive
# pg_dump and pg_restore (they are registered with pg_extension_config_dump),
# and the restored store goes on where the old one stopped: reads return the
# same upcast events, and new appends get versions and global positions after
# the restored ones.
#
# Needs a running server (PG* variables, as set by tests/lib.sh).
set -euo pipefail

src=es_dump_source
dst=es_dump_target
dump=$(mktemp /tmp/es-dump.XXXXXX)
cleanup() {
	psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" >/dev/null 2>&1 || true
	rm -f "$dump"
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" \
	-c "CREATE DATABASE $src" -c "CREATE DATABASE $dst"

psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d $src <<'SQL'
CREATE EXTENSION es;
CREATE FUNCTION opened_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT (data - 'name') || jsonb_build_object('owner', data->'name') $$;
SELECT es_append('acct-1', 0, 'AccountOpened', '{"name": "Alice"}');
SELECT es_register_upcaster('AccountOpened', 1, 'opened_v1_to_v2(jsonb)');
SELECT es_append('acct-1', 1, '[{"type": "Deposited", "data": {"amount": 5}, "metadata": {"m": 1}},
                               {"type": "AccountOpened", "data": {"owner": "Bob"}, "id": "80000000-0000-4000-8000-000000000001"}]');
SELECT es_append('acct-2', NULL, 'Deposited', '{"amount": 7}');
SQL

"${ES_PG_BIN:-/usr/lib/postgresql/${ES_PG_MAJOR:-15}/bin}/pg_dump" -Fc -d $src -f "$dump"
"${ES_PG_BIN:-/usr/lib/postgresql/${ES_PG_MAJOR:-15}/bin}/pg_restore" --exit-on-error -d $dst "$dump"

snapshot() {
	psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" <<'SQL'
SELECT 'event', global_position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at
FROM es_events ORDER BY global_position;
SELECT 'stream', stream_id, version, created_at, updated_at FROM es_streams ORDER BY stream_id;
SELECT 'upcaster', event_type, from_schema_version, function, registered_at FROM es_upcasters ORDER BY 2, 3;
SELECT 'read', r.* FROM es_read('acct-1') r;
SQL
}

status=0
if ! diff <(snapshot $src) <(snapshot $dst); then
	echo "FAIL: the restored store differs from the dumped one (diff above)"
	status=1
fi

# The restored store goes on: next version, a position after every restored
# one, the idempotent retry of a restored append, upcasting, immutability.
result=$(psql -X -q -At -v ON_ERROR_STOP=1 -d $dst <<'SQL' 2>&1
CREATE TEMP TABLE answers AS
    SELECT 1 AS n, es_append('acct-1', 3, 'Deposited', '{"amount": 1}')::text AS answer;
INSERT INTO answers
    SELECT 2, (SELECT global_position > (SELECT max(global_position) FROM es_events WHERE stream_id = 'acct-2')
               FROM es_events WHERE stream_id = 'acct-1' AND version = 4)::text;
INSERT INTO answers
    SELECT 3, es_append('acct-1', 2, 'AccountOpened', '{"owner": "Bob"}', NULL, '80000000-0000-4000-8000-000000000001')::text;
INSERT INTO answers
    SELECT 4, schema_version::text FROM es_read('acct-1', 1, 1);
SELECT string_agg(answer, ' ' ORDER BY n) FROM answers;
DO $$ BEGIN DELETE FROM es_events; RAISE EXCEPTION 'delete allowed'; EXCEPTION WHEN SQLSTATE 'SE405' THEN NULL; END $$;
SQL
)
if [ "$result" != "4 true 3 2" ]; then
	echo "FAIL: the restored store answered '$result', expected '4 true 3 2'"
	status=1
else
	echo "ok: dump and restore kept every event, stream and upcaster; the restored store goes on ($result)"
fi
exit $status
