#!/usr/bin/env bash
# make bench: provisions its own Postgres (fsync on, as in production), Elasticsearch and Kratos, runs the
# benchmarks in ./bench (each beside its floor) and the micro-benchmarks, and writes docs/benchmarks.md with
# the machine, date and commit. Not part of `make test`: it takes a while and wants a quiet machine.
#   BENCH='HookAcknowledgement Burst' scripts/bench.sh    run some of them (of HookAcknowledgement, Burst, Reconcile)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KH_ROOT"

# The code measured: taken now, as the benchmarks start (docs/benchmarks.md, rewritten at the end, aside).
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- . ':!docs/benchmarks.md' 2>/dev/null)" ]; then
  commit="$commit (with uncommitted changes)"
fi

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/kratos-hooks-bench.XXXXXX")"
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
ensure_postgres
ensure_elasticsearch
ensure_kratos
TEST_DATABASE_URL="$(start_postgres "$run_dir/pg" "$(free_port)" on)"
TEST_ELASTICSEARCH_URL="$(start_elasticsearch "$run_dir/es" "$(free_port)")"
TEST_KRATOS_BIN="$KRATOS_BIN"
export TEST_DATABASE_URL TEST_ELASTICSEARCH_URL TEST_KRATOS_BIN

part="$run_dir/report.part"
export BENCH_REPORT="$part"
: >"$part"
# One benchmark per run, the hook's first: the burst and reconcile leave Postgres and Elasticsearch busy
# for a while (autovacuum, checkpoints, segment merges), which a latency measurement must not inherit.
for name in ${BENCH:-HookAcknowledgement Burst Reconcile}; do
  log "running Benchmark$name"
  go test -run '^$' -bench "^Benchmark$name\$" -benchtime 1x -timeout 90m ./bench/ | tee -a "$run_dir/bench.log"
done

log "running micro-benchmarks"
go test -run '^$' -bench . -benchmem -count 3 ./jsonnet/ ./hooks/ | tee "$run_dir/micro.log"
# One whole sync job at a time (River fetch, lock, Kratos GET, mapping, upsert, completion) against the real
# Kratos and Postgres: the time the mapping's share is measured against.
go test -run '^$' -bench IdentityWorker -benchtime 300x -count 3 ./sync/ | tee -a "$run_dir/micro.log"

# The mapping's share of a sync job: the median of BenchmarkMapper_Map's ns/op over the median of
# BenchmarkIdentityWorker's (target: at most a tenth).
# median_ns BENCHMARK UNIT: the median over the runs of the value reported in UNIT (ns/op, ns/job-run).
median_ns() {
  grep -E "^$1-[0-9]+ " "$run_dir/micro.log" |
    awk -v unit="$2" '{for (i = 2; i <= NF; i++) if ($i == unit) print $(i-1)}' |
    sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'
}
map_ns="$(median_ns BenchmarkMapper_Map ns/op)"
job_ns="$(median_ns BenchmarkIdentityWorker ns/job-run)"
if [ -n "$map_ns" ] && [ -n "$job_ns" ]; then
  {
    echo "## 4. Profile mapping's share of a sync job"
    echo
    echo "The default mapping (\`jsonnet/profile.jsonnet\`, go-jsonnet, parsed once) on one identity, against one"
    echo "whole sync job processed alone (identity lock, Kratos admin GET, mapping, upsert, completion in the same"
    echo "transaction; from its start to its completion, without River's wait between fetches), medians of three"
    echo "runs each (micro-benchmarks below). Target: at most a tenth."
    echo
    echo "| mapping, one identity | sync job, alone | share |"
    echo "|---|---|---|"
    awk -v m="$map_ns" -v j="$job_ns" 'BEGIN {printf "| %.0f µs | %.2f ms | **%.3f** |\n", m/1000, j/1e6, m/j}'
    echo
  } >>"$part"
fi

mkdir -p docs
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
{
  cat <<EOF2
# Benchmarks

Written by \`make bench\` (scripts/bench.sh). Every number is measured beside its floor in the same run.

- machine: $(nproc) cores ($cpu), $mem memory, $(uname -sr)
- date: $(date -u +%Y-%m-%dT%H:%MZ)
- commit: $commit
- services: Postgres $(psql --version | awk '{print $3}') with fsync on, Elasticsearch $ES_VERSION (test distribution, 512 MiB heap), Kratos $KRATOS_VERSION on Postgres, all on this machine

EOF2
  cat "$part"
  echo "## Micro-benchmarks"
  echo
  echo '```'
  grep -E '^(Benchmark|goos|goarch|cpu)' "$run_dir/micro.log" || true
  echo '```'
} >docs/benchmarks.md
log "wrote docs/benchmarks.md"
