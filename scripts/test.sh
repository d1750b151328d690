#!/usr/bin/env bash
# The test command (`make test`): provisions what the tests need on a fresh machine, runs every test, and
# stops what it started.
#
# Services are started only when their variable is not already set, so people with their own can skip
# provisioning:
#   TEST_DATABASE_URL       Postgres superuser URL (tests create and drop their own databases)
#   TEST_ELASTICSEARCH_URL  Elasticsearch 8.19 URL (tests use their own index names)
#   TEST_ELASTICSEARCH_HOME an unpacked Elasticsearch 8.19 distribution (the outage test runs its own node)
#   TEST_KRATOS_BIN         a Kratos v1.3.1 binary built with -tags sqlite,json1
# Extra arguments go to `go test` (for example: scripts/test.sh -run TestEndToEnd ./cmd/...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KH_ROOT"

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/kratos-hooks-test.XXXXXX")"
chmod 755 "$run_dir"
cleanup() {
  local rc=$?
  stop_elasticsearch "$run_dir/es" || true
  stop_postgres "$run_dir/pg" || true
  rm -rf "$run_dir" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_service_user
ensure_docker_compose

# Also when a server is given: the Postgres fault test (chaos/) runs initdb and pg_ctl for a server of its own.
ensure_postgres
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  # fsync off: the test cluster is thrown away. Durability is exercised by the fault tests (chaos/), which
  # crash a Postgres of their own, with fsync on.
  TEST_DATABASE_URL="$(start_postgres "$run_dir/pg" "$(free_port)" off)"
fi
if [ -z "${TEST_ELASTICSEARCH_URL:-}" ] || [ -z "${TEST_ELASTICSEARCH_HOME:-}" ]; then
  # Also when a cluster is given: the outage test starts (and stops) a node of its own from the distribution.
  ensure_elasticsearch
  TEST_ELASTICSEARCH_HOME="${TEST_ELASTICSEARCH_HOME:-$ES_HOME}"
  TEST_ELASTICSEARCH_JAVA_HOME="${TEST_ELASTICSEARCH_JAVA_HOME:-$(es_java_home)}"
fi
if [ -z "${TEST_ELASTICSEARCH_URL:-}" ]; then
  TEST_ELASTICSEARCH_URL="$(start_elasticsearch "$run_dir/es" "$(free_port)")"
fi
if [ -z "${TEST_KRATOS_BIN:-}" ]; then
  ensure_kratos
  TEST_KRATOS_BIN="$KRATOS_BIN"
fi
export TEST_DATABASE_URL TEST_ELASTICSEARCH_URL TEST_KRATOS_BIN TEST_ELASTICSEARCH_HOME TEST_ELASTICSEARCH_JAVA_HOME

full=0
if [ $# -eq 0 ]; then set -- ./...; full=1; fi
log "running go test $*"
go test -count=1 -timeout 30m "$@"

if [ "$full" = 1 ]; then
  log "running every fuzz target (${FUZZ_TIME:-100000x} executions each)"
  scripts/fuzz.sh
fi
