#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a fixed amount of work each (go test -fuzz takes one target
# per invocation). A crash fails the run and leaves its input in the package's testdata/fuzz/ for a
# regular `go test` to replay; committed seed corpora live there too.
#
# FUZZ_TIME is passed to -fuzztime. The default is a count of executions rather than seconds: on a busy
# machine Go 1.26's fuzz coordinator can end a time-boxed run with "context deadline exceeded" although no
# input failed (golang/go#75804). Such a run, which leaves no failing input behind, is tried once more.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzz_time="${FUZZ_TIME:-100000x}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

run_target() { # run_target PKG TARGET
  go test -run '^$' -fuzz "^$2\$" -fuzztime "$fuzz_time" "$1" >"$log" 2>&1
}

grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    echo "fuzz: $target in $pkg ($fuzz_time)"
    if ! run_target "$pkg" "$target"; then
      if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log"; then
        echo "fuzz: $target: the coordinator timed out without a failing input; trying once more"
        run_target "$pkg" "$target" || { cat "$log"; echo "fuzz: $target FAILED"; exit 1; }
      else
        cat "$log"
        echo "fuzz: $target FAILED"
        exit 1
      fi
    fi
    tail -1 "$log"
  done
done
