#!/usr/bin/env bash
# tests/follower/run.sh — build tests/follower/es_follower and run it.
#
#   tests/follower/run.sh [es_follower options]
#       against the server the PG* environment variables name; without
#       options, two runs: --follow sleep, then --follow wait (~10 s each)
#   tests/follower/run.sh --cluster [es_follower options]
#       against a throwaway cluster (tests/lib.sh; the es build must already
#       be installed)
#   tests/follower/run.sh [--cluster] --self-test
#       show that the checks catch a wrong follower: a short run per
#       --sabotage kind, each of which must fail naming the expected violation
#
# Exits non-zero when the build or the program does.  Options of es_follower:
# --follow sleep|wait --seconds N --writers N --streams N --loops N --tag TAG
# --sabotage KIND (see --help).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"

es_build_client "$here/es_follower" "$here/es_follower.c"

if [ "${1:-}" = "--cluster" ]; then
	shift
	es_cluster_start
fi

if [ $# -gt 0 ] && [ "$1" != "--self-test" ]; then
	"$here/es_follower" "$@"
	exit
fi

if [ $# -eq 0 ]; then
	status=0
	for mode in sleep wait; do
		echo "==> es_follower --follow $mode"
		"$here/es_follower" --follow "$mode" || status=1
	done
	exit $status
fi

# kind:violation that the check must name
status=0
for expect in "skip:gap: committed event never returned" \
	"duplicate:event returned more than once" \
	"rollback:rolled-back event returned" \
	"phantom:unacknowledged event returned" \
	"order:position not increasing" \
	"group:group: stream split across members"; do
	kind=${expect%%:*}
	violation=${expect#*:}
	if out=$("$here/es_follower" --seconds 2 --writers 4 --sabotage "$kind" 2>&1); then
		echo "self-test: --sabotage $kind: es_follower exited 0" >&2
		status=1
	elif ! grep -qF "VIOLATION ($violation)" <<<"$out"; then
		printf 'self-test: --sabotage %s: no "%s" violation reported:\n%s\n' "$kind" "$violation" "$out" >&2
		status=1
	else
		echo "self-test: --sabotage $kind: caught: $(grep -F "VIOLATION ($violation)" <<<"$out" | head -1)"
	fi
done
exit $status
