# Sourced by the test scripts: pinned Python venvs in Souq's cache, and the souq binary
# they test.

# The chart tests' pins (scripts/test-chart.sh, scripts/test-cluster.sh): the Helm v4
# SDK binding and the Kubernetes schemas.
CHART_PINS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0"
# The observability tests' pins (scripts/test-observability.sh, and the OTLP sink of
# scripts/bench-telemetry.sh): gRPC and the OpenTelemetry protocol's messages.
OBSERVABILITY_PINS="grpcio==1.85.1 opentelemetry-proto==1.45.2 protobuf==7.36.2"

# souq_venv NAME PINS: sets VENV to ${SOUQ_CACHE_DIR:-/var/cache/souq}/NAME, a venv with
# PINS (pip requirements, space separated) installed; made on first use and made again
# when the pins change.
souq_venv() {
    local cache="${SOUQ_CACHE_DIR:-/var/cache/souq}"
    VENV="$cache/$1"
    if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$VENV/.souq-pins" 2>/dev/null)" != "$2" ]]; then
        echo "making $VENV ($2)" >&2
        mkdir -p "$cache"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        # shellcheck disable=SC2086
        "$VENV/bin/pip" install --quiet --disable-pip-version-check $2
        echo "$2" > "$VENV/.souq-pins"
    fi
}

# default_souq_bin: exports SOUQ_BIN as the debug build in the cargo target directory
# when SOUQ_BIN is unset and that build exists.
default_souq_bin() {
    local built="${CARGO_TARGET_DIR:-${SOUQ_CACHE_DIR:-/var/cache/souq}/target}/debug/souq"
    if [[ -z "${SOUQ_BIN:-}" && -x "$built" ]]; then
        export SOUQ_BIN="$built"
    fi
}
