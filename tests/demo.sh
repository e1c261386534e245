#!/usr/bin/env bash
# tests/demo.sh — build, install and run the bank-account demo (tests/demo.sql)
# on a throwaway cluster that is removed afterwards.  Installs what is missing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ES_ROOT"

es_setup
es_cluster_start
es_log "running the demo (tests/demo.sql) on a throwaway cluster in $ES_CLUSTER_DIR"
psql -X -q -f tests/demo.sql
es_log "demo finished; the throwaway cluster is being removed"
