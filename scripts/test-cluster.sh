#!/usr/bin/env bash
# The cluster chaos run: `scripts/cluster.py up` (Souq's image from SOUQ_BIN or the debug
# build, the chart on 3 simulated hosts, 2 control planes, 2 edges), then `chaos` with the
# arguments given (none: all 9 faults with their time targets; --short: faults 1,2,4,5,
# times not judged, as scripts/test.sh runs it; --faults 3,8), then `down`, always, also on failure or
# Ctrl-C. Uses the chart tests' venv (the pinned Helm SDK), made here on first use like
# scripts/test-chart.sh does. Needs root and Docker. Exits with chaos's status.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SOUQ_CACHE_DIR:-/var/cache/souq}"
venv="$cache/chart-venv"
# The same pins as scripts/test-chart.sh, read from it so the two never drift.
eval "$(grep -E '^(HELM_SDK_VERSION|KUBERNETES_VALIDATE_VERSION)=' "$root/scripts/test-chart.sh")"
pins="helm-python-sdk==$HELM_SDK_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$venv/.souq-pins" 2>/dev/null)" != "$pins" ]]; then
    echo "test-cluster: making $venv ($pins)" >&2
    mkdir -p "$cache"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
    echo "$pins" > "$venv/.souq-pins"
fi
export PYTHONDONTWRITEBYTECODE=1
state="$(mktemp -u /tmp/souq-cluster/test-XXXXXX.json)"
py=("$venv/bin/python" "$root/scripts/cluster.py" --state "$state")
finish() {
    "${py[@]}" down >/dev/null || echo "test-cluster: down failed; remove what is left with: ${py[*]} down" >&2
}
trap finish EXIT
trap 'exit 130' INT TERM
started=$SECONDS
"${py[@]}" up --json >/dev/null
echo "test-cluster: cluster up in $((SECONDS - started)) s" >&2
started=$SECONDS
rc=0
"${py[@]}" chaos "$@" || rc=$?
echo "test-cluster: chaos took $((SECONDS - started)) s (exit $rc)" >&2
exit "$rc"
