#!/usr/bin/env bash
# Where `souq up` spends its CPU under `souq bench invoke`, by share of perf samples: the
# symbols of tracing and OpenTelemetry (with Souq's trace context), and those of the
# metrics. A steadier measure of telemetry's cost than throughput on a shared machine.
# Usage: SOUQ_BIN=target/release/souq bash scripts/perf-telemetry.sh [RATIO]
#   RATIO unset or empty: no OTLP endpoint (nothing sampled, no OpenTelemetry layer);
#   else exporting at that --trace-sample-ratio to a local sink (tests/observability).
# Needs perf (Debian's linux-perf) and root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${SOUQ_BIN:?set SOUQ_BIN to a release build of souq}"
ratio="${1:-}"
port="${OTLP_PORT:-14319}"
command -v perf >/dev/null || { echo "perf-telemetry: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
out="$(mktemp -d /tmp/souq-perf-XXXXXX)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$out"' EXIT

env=(SOUQ_OTLP_ENDPOINT=)
if [[ -n "$ratio" ]]; then
    # shellcheck source=scripts/lib/venv.sh
    source scripts/lib/venv.sh
    souq_venv observability-venv "$OBSERVABILITY_PINS"
    "$VENV/bin/python" tests/observability/otlp_receiver.py "$port" >"$out/sink.log" 2>&1 &
    pids+=($!)
    env=(SOUQ_OTLP_ENDPOINT="http://127.0.0.1:$port" SOUQ_TRACE_SAMPLE_RATIO="$ratio")
fi
env "${env[@]}" "$bin" bench invoke --requests 3000 --duration-s 20 --deploys 1 >"$out/bench.log" 2>&1 &
bench=$!
pids+=("$bench")
# The bench's own `souq up` child; the load runs from about 10 s in (deploy, then c=1).
for _ in $(seq 1 100); do
    up="$(pgrep -P "$bench" -f 'souq up' | head -1 || true)"
    [[ -n "$up" ]] && break
    sleep 0.1
done
[[ -n "${up:-}" ]] || { echo "perf-telemetry: the bench started no souq up" >&2; exit 1; }
sleep 10
perf record -F 499 -p "$up" -o "$out/perf.data" -- sleep 15 >/dev/null 2>&1
wait "$bench" || true
grep -E 'throughput' "$out/bench.log" || true
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | awk '
    { p = $1; sub("%", "", p); total += p
      if ($0 ~ /tracing|opentelemetry|souq_proto::trace|sharded_slab|task_local|TaskLocal/) tr += p
      else if ($0 ~ /prometheus_client|::metrics::|observe::count/) me += p }
    END { printf "ratio %s: tracing %.2f %% of samples, metrics %.2f %% (of %.0f %% listed)\n", "'"${ratio:-off}"'", tr, me, total }'
