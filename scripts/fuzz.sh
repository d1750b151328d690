#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZ_TIME each (default 10s; go test -fuzz takes one target
# per invocation). A crash fails the run and leaves its input in the package's testdata/fuzz/ for a
# regular `go test` to replay. Committed seed corpora live there too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzz_time="${FUZZ_TIME:-10s}"
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    echo "fuzz: $target in $pkg for $fuzz_time"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzz_time" "$pkg" >/tmp/fuzz-$$.log 2>&1 ||
      { cat /tmp/fuzz-$$.log; rm -f /tmp/fuzz-$$.log; echo "fuzz: $target FAILED"; exit 1; }
    tail -1 /tmp/fuzz-$$.log
  done
done
rm -f /tmp/fuzz-$$.log
