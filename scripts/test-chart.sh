#!/usr/bin/env bash
# Tests the Helm chart deploy/helm/souq offline: no cluster, no helm CLI. Makes a venv
# under ${SOUQ_CACHE_DIR:-/var/cache/souq}/chart-venv on first use with the pinned Helm v4
# SDK binding and the Kubernetes schemas, then runs tests/chart (lint, refused values,
# strict validation against Kubernetes 1.28-1.33, structural assertions). Exits non-zero
# on any failure. SOUQ_BIN names a souq binary for the CLI checks (default: the debug
# build in the cache, when it exists).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
souq_venv chart-venv "$CHART_PINS"
venv="$VENV"
default_souq_bin

export PYTHONDONTWRITEBYTECODE=1
# --run: test 5 instead, the rendered chart run in Docker (see scripts/test-chart-run.sh).
if [[ "${1:-}" == "--run" ]]; then
    shift
    exec "$venv/bin/python" "$root/tests/chart/run_test.py" "$root" "$@"
fi
exec "$venv/bin/python" "$root/tests/chart/chart_test.py" "$root" "$@"
