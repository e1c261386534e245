#!/usr/bin/env bash
# tests/crash.sh — crash safety under load (tests/crash.py): kill -9 of the
# postmaster, several times, while 16 clients append, an async projection
# catches up and snapshots are taken; then every acknowledged append, the
# streams, the global order, the projection and es_load are verified.
# Runs its own throwaway cluster (as a subreaper, so that the killed server's
# processes are reaped).  Installs python3-psycopg when it is missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=/usr/bin/python3
if ! "$PYTHON" -c 'import psycopg' 2>/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "python3-psycopg is missing (run as root to install it)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends python3-psycopg >/dev/null
fi
exec "$PYTHON" "$here/crash.py" "$@"
