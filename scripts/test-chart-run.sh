#!/usr/bin/env bash
# Test 5 of the chart: builds Souq's image (deploy/image/build.sh; cached layers make a
# rebuild quick) from SOUQ_BIN or the debug build, then runs the rendered chart in Docker
# (tests/chart/run_test.py through scripts/test-chart.sh --run). Extra arguments go to
# run_test.py, e.g. --set edge.port=8081 to see a wrong chart fail. Needs root and Docker.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SOUQ_BIN:-${CARGO_TARGET_DIR:-${SOUQ_CACHE_DIR:-/var/cache/souq}/target}/debug/souq}"
started=$SECONDS
image="$(bash "$root/deploy/image/build.sh" --binary "$bin")"
echo "test-chart-run: $image built in $((SECONDS - started)) s" >&2
started=$SECONDS
rc=0
bash "$root/scripts/test-chart.sh" --run --image "$image" "$@" || rc=$?
echo "test-chart-run: the run took $((SECONDS - started)) s (exit $rc)" >&2
exit "$rc"
