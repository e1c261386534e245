# tests/lib.sh — shared by tests/run.sh, tests/demo.sh and bench/run.sh.
#
# Installs what is missing, builds and installs es, and runs a throwaway
# PostgreSQL cluster: initdb'd as the postgres OS user (PostgreSQL refuses to
# run as root) in a new temporary directory, listening only on a Unix socket
# in that directory (no TCP port is opened, so it cannot collide with any
# other server), and stopped and removed on exit, whatever happened.
#
# Source it, then:
#   es_setup              install packages, build (-Werror) and install es
#   es_cluster_start [setting=value ...]
#                         start the cluster; exports PGHOST, PGPORT, PGUSER,
#                         PGDATABASE and ES_CLUSTER_DIR.  es is preloaded
#                         (shared_preload_libraries) unless ES_PRELOAD=0.
#   es_cluster_stop       stop it (also runs on exit)
#   es_build_client OUTPUT SOURCE...
#                         compile a libpq test program, with the library the
#                         test programs share (tests/common/es_client.c)

set -euo pipefail

ES_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ES_PG_MAJOR=${ES_PG_MAJOR:-15}
# ES_PG_BIN may name another (relocated) installation of the same major.
ES_PG_BIN=${ES_PG_BIN:-/usr/lib/postgresql/$ES_PG_MAJOR/bin}
export ES_PG_BIN
ES_CLUSTER_DIR=""

es_log() { printf '\n==> %s\n' "$*"; }

# Runs a command as the unprivileged OS user that owns the cluster.
es_as_postgres() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

es_install_packages() {
	local needed=()
	local pkg
	for pkg in postgresql-$ES_PG_MAJOR postgresql-server-dev-$ES_PG_MAJOR libpq-dev \
		postgresql-contrib gcc make libipc-run-perl; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
			needed+=("$pkg")
	done
	[ ${#needed[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages: ${needed[*]} (run as root to install them)" >&2
		return 1
	fi
	es_log "installing ${needed[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The Debian package creates a default cluster and starts it; we never use
	# or touch it, every script here runs its own.
	apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
}

es_build() {
	es_log "building and installing es"
	make -C "$ES_ROOT" -s PG_CONFIG="$ES_PG_BIN/pg_config" ES_WERROR=1 all
	make -C "$ES_ROOT" -s PG_CONFIG="$ES_PG_BIN/pg_config" install >/dev/null
}

es_setup() {
	es_install_packages
	es_build
}

# Compiles SOURCE... and tests/common/es_client.c into OUTPUT, warnings being
# errors, against the libpq that $PG_CONFIG (default: this major's
# pg_config) names, or else pkg-config's.
es_build_client() {
	local output=$1
	shift
	local pg_config=${PG_CONFIG:-$ES_PG_BIN/pg_config}
	local cflags libs
	if [ -x "$pg_config" ]; then
		cflags="-I$("$pg_config" --includedir)"
		libs="-L$("$pg_config" --libdir) -lpq"
	else
		cflags=$(pkg-config --cflags libpq)
		libs=$(pkg-config --libs libpq)
	fi
	# shellcheck disable=SC2086
	gcc -O2 -Wall -Wextra -Werror $cflags -I"$ES_ROOT/tests/common" -o "$output" \
		"$@" "$ES_ROOT/tests/common/es_client.c" $libs -lpthread
}

es_cluster_stop() {
	local dir=$ES_CLUSTER_DIR
	[ -n "$dir" ] || return 0
	ES_CLUSTER_DIR=""
	if [ -f "$dir/data/postmaster.pid" ]; then
		es_as_postgres "$ES_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 ||
			es_as_postgres "$ES_PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ -n "${ES_KEEP_CLUSTER_LOG:-}" ] && [ -f "$dir/server.log" ]; then
		cp "$dir/server.log" "$ES_KEEP_CLUSTER_LOG" 2>/dev/null || true
	fi
	rm -rf "$dir"
}

es_cluster_start() {
	local dir
	dir=$(mktemp -d /tmp/es-cluster.XXXXXX)
	chmod 755 "$dir"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
	ES_CLUSTER_DIR=$dir
	trap es_cluster_stop EXIT
	trap 'exit 130' INT TERM

	es_as_postgres "$ES_PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
		--encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; return 1; }

	{
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "port = 5432"
		if [ "${ES_PRELOAD:-1}" = 1 ]; then
			echo "shared_preload_libraries = 'es'"
		fi
		echo "max_connections = 100"
		echo "max_prepared_transactions = 10"
		local setting
		for setting in "$@"; do echo "$setting"; done
	} | es_as_postgres tee -a "$dir/data/postgresql.conf" >/dev/null

	es_as_postgres "$ES_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
		{ cat "$dir/server.log" >&2; return 1; }

	export PGHOST=$dir PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
	export ES_CLUSTER_DIR
}
