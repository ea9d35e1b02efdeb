#!/usr/bin/env bash
# What telemetry costs the data path: `souq bench invoke` in alternating rounds of
#   base    a souq built before telemetry (BASE_BIN; left out when unset),
#   off     no OTLP endpoint: trace ids, spans and metrics, nothing exported,
#   r0      exporting to a local OTLP sink at --trace-sample-ratio 0,
#   r0.01   the same at 0.01,
#   r1      the same at 1 (every call traced).
# Usage: SOUQ_BIN=target/release/souq [BASE_BIN=…] bash scripts/bench-telemetry.sh [ROUNDS]
# The sink is tests/observability/otlp_receiver.py, run in the observability tests' venv
# (scripts/lib/venv.sh makes it when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/venv.sh
source scripts/lib/venv.sh
souq_venv observability-venv "$OBSERVABILITY_PINS"
rounds="${1:-3}"
bin="${SOUQ_BIN:?set SOUQ_BIN to a release build of souq}"
python="$VENV/bin/python"
port="${OTLP_PORT:-14317}"
args=(bench invoke --requests "${REQUESTS:-3000}" --duration-s "${DURATION_S:-10}" --deploys "${DEPLOYS:-3}")

"$python" tests/observability/otlp_receiver.py "$port" >/tmp/souq-bench-otlp.log 2>&1 &
sink=$!
trap 'kill "$sink" 2>/dev/null || true' EXIT

run() {
    local name="$1"; shift
    echo "== round $r: $name"
    env "$@" "${args[@]}" 2>/dev/null | grep -E "warm invoke|throughput|deploy to first" | sed "s/^/$name: /"
}

for r in $(seq 1 "$rounds"); do
    if [[ -n "${BASE_BIN:-}" ]]; then run base "$BASE_BIN"; fi
    run off SOUQ_OTLP_ENDPOINT= "$bin"
    run r0 SOUQ_OTLP_ENDPOINT="http://127.0.0.1:$port" SOUQ_TRACE_SAMPLE_RATIO=0 "$bin"
    run r0.01 SOUQ_OTLP_ENDPOINT="http://127.0.0.1:$port" SOUQ_TRACE_SAMPLE_RATIO=0.01 "$bin"
    run r1 SOUQ_OTLP_ENDPOINT="http://127.0.0.1:$port" SOUQ_TRACE_SAMPLE_RATIO=1 "$bin"
done
echo "== the sink received: $(tail -1 /tmp/souq-bench-otlp.log)"
