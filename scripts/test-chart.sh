#!/usr/bin/env bash
# Tests the Helm chart deploy/helm/souq offline: no cluster, no helm CLI. Makes a venv
# under ${SOUQ_CACHE_DIR:-/var/cache/souq}/chart-venv on first use with the pinned Helm v4
# SDK binding and the Kubernetes schemas, then runs tests/chart (lint, refused values,
# strict validation against Kubernetes 1.28-1.33, structural assertions). Exits non-zero
# on any failure. SOUQ_BIN names a souq binary for the CLI checks (default: the debug
# build in the cache, when it exists).
set -euo pipefail

HELM_SDK_VERSION=0.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SOUQ_CACHE_DIR:-/var/cache/souq}"
venv="$cache/chart-venv"
stamp="$venv/.souq-pins"
pins="helm-python-sdk==$HELM_SDK_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"

if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]]; then
    echo "test-chart: making $venv ($pins)" >&2
    mkdir -p "$cache"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
    echo "$pins" > "$stamp"
fi

if [[ -z "${SOUQ_BIN:-}" && -x "${CARGO_TARGET_DIR:-$cache/target}/debug/souq" ]]; then
    export SOUQ_BIN="${CARGO_TARGET_DIR:-$cache/target}/debug/souq"
fi

export PYTHONDONTWRITEBYTECODE=1
# --run: test 5 instead, the rendered chart run in Docker (see scripts/test-chart-run.sh).
if [[ "${1:-}" == "--run" ]]; then
    shift
    exec "$venv/bin/python" "$root/tests/chart/run_test.py" "$root" "$@"
fi
exec "$venv/bin/python" "$root/tests/chart/chart_test.py" "$root" "$@"
