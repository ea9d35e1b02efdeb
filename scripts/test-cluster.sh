#!/usr/bin/env bash
# The cluster chaos run: `scripts/cluster.py up` (Souq's image from SOUQ_BIN or the debug
# build, the chart on 3 simulated hosts, 2 control planes, 2 edges), then `chaos` with the
# arguments given (none: all 9 faults with their time targets; --short: faults 1,2,4,5,
# times not judged, as scripts/test.sh runs it; --faults 3,8), then `down`, always, also on failure or
# Ctrl-C. Uses the chart tests' venv (the pinned Helm SDK; scripts/lib/venv.sh). Needs
# root and Docker. Exits with chaos's status.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
souq_venv chart-venv "$CHART_PINS"
venv="$VENV"
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
