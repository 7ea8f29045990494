#!/usr/bin/env bash
# The reliability tests (tests/it/reliability, described in RELIABILITY.md) in their long form:
# a release build, one test at a time, each printing its figures on a `RELIABILITY ...` line,
# collected at the end.
#
# Usage: scripts/reliability.sh [scale] [test filter]
#   scale   OSA_RELIABILITY_SCALE: `long` (the default, = 10), or a number; 1 is the bounded
#           form that `scripts/test.sh` and CI run
#   filter  e.g. `reliability::crash` (default: every reliability test)
# Other knobs: OSA_RELIABILITY_SEED (replay a run), OSA_RELIABILITY_LOAD_RATE (events/s of the
# load test, default 250), OSA_RELIABILITY_KEEP_LOGS=1 (keep the processes' logs).
#
# Uses the server in DATABASE_URL when it is set, else a throwaway PostgreSQL cluster (see
# scripts/test.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export OSA_RELIABILITY_SCALE="${1:-long}"
filter="${2:-reliability::}"
log="$(mktemp -t osa-reliability.XXXXXX)"
trap 'rm -f "$log"' EXIT

cargo run -q -p osa-events-fixtures --bin with-postgres -- \
  cargo test --release -p osa-events-suite --test it "$filter" -- --nocapture --test-threads=1 \
  2>&1 | tee "$log"

echo
echo "== figures (scale $OSA_RELIABILITY_SCALE)"
grep -oE "RELIABILITY .*" "$log" || true
