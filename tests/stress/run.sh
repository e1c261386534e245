#!/usr/bin/env bash
# tests/stress/run.sh — build tests/stress/es_stress and run it.
#
#   tests/stress/run.sh [es_stress options]
#       against the server the PG* environment variables name
#   tests/stress/run.sh --cluster [es_stress options]
#       against a throwaway cluster (tests/lib.sh; the es build must already
#       be installed)
#   tests/stress/run.sh [--cluster] --self-test
#       show that the checks catch corruption: a small run per --sabotage
#       kind, each of which must fail naming the expected violation
#
# Exits non-zero when the build or the program does.  Options of es_stress:
# --clients N --loops N --streams N --tag TAG --sabotage KIND (see --help).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"

es_build_client "$here/es_stress" "$here/es_stress.c"

if [ "${1:-}" = "--cluster" ]; then
	shift
	es_cluster_start
fi

if [ "${1:-}" != "--self-test" ]; then
	"$here/es_stress" "$@"
	exit
fi

# kind:violation that the check must name
status=0
for expect in "lost:acknowledged event not stored" \
	"duplicate:event stored more than once" \
	"gap:missing version" \
	"unacked:unacknowledged event stored" \
	"order:global position not increasing with version" \
	"orphan:stream row without events"; do
	kind=${expect%%:*}
	violation=${expect#*:}
	if out=$("$here/es_stress" --clients 4 --loops 40 --streams 3 --sabotage "$kind" 2>&1); then
		echo "self-test: --sabotage $kind: es_stress exited 0" >&2
		status=1
	elif ! grep -qF "VIOLATION ($violation)" <<<"$out"; then
		printf 'self-test: --sabotage %s: no "%s" violation reported:\n%s\n' "$kind" "$violation" "$out" >&2
		status=1
	else
		echo "self-test: --sabotage $kind: caught: $(grep -F "VIOLATION ($violation)" <<<"$out" | head -1)"
	fi
done
exit $status
