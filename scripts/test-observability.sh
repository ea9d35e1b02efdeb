#!/usr/bin/env bash
# Tests Souq's telemetry end to end:
#   1. installs Debian's prometheus package when promtool or prometheus is missing (its
#      own service is kept from starting, and stopped and disabled if it did start: the
#      tests run their own prometheus on a free loopback port);
#   2. `promtool check rules` and `promtool test rules` on deploy/prometheus;
#   3. tests/observability in a venv (grpcio and opentelemetry-proto, pinned, made under
#      ${SOUQ_CACHE_DIR:-/var/cache/souq}/observability-venv on first use): `souq up`
#      exporting traces to a real OTLP/gRPC receiver and scraped by a real prometheus,
#      checked against known traffic (needs Docker and the runtime images).
# SOUQ_BIN names the souq binary (default: the debug build in the cache). Bounded in
# time (SOUQ_OBS_TIMEOUT_S, default 900); the Python tests end every process they start
# and remove their temp dirs, also on failure or Ctrl-C. Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
rules_dir="$root/deploy/prometheus"
timeout_s="${SOUQ_OBS_TIMEOUT_S:-900}"

die() { echo "test-observability: $*" >&2; exit 1; }
note() { echo "test-observability: $*" >&2; }

# --- promtool and prometheus, from Debian ------------------------------------
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
cleanup_policy() { if [[ "$POLICY_RC_OURS" == 1 ]]; then rm -f "$POLICY_RC"; POLICY_RC_OURS=0; fi; }
trap cleanup_policy EXIT

ensure_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return
    fi
    [[ "$(id -u)" == 0 ]] || die "promtool or prometheus is missing and only root may install Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package's scripts from starting its own service (on :9090).
    if [[ ! -e "$POLICY_RC" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    note "apt-get update"
    apt-get update -q >&2
    note "apt-get install prometheus"
    apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends prometheus >&2
    cleanup_policy
    # Should it have started all the same: stop and disable it; nothing here relies on it.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    if [[ -x /etc/init.d/prometheus ]]; then
        /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 ||
        die "Debian's prometheus package did not provide promtool and prometheus"
}

ensure_prometheus
note "$(prometheus --version 2>&1 | head -n1)"

# --- the alert rules -----------------------------------------------------------
promtool check rules "$rules_dir/souq-rules.yaml" || die "promtool check rules failed"
# Rule files in the test file are relative to its directory.
(cd "$rules_dir" && promtool test rules souq-rules.test.yaml) || die "promtool test rules failed"

# --- the live tests ------------------------------------------------------------
default_souq_bin
[[ -n "${SOUQ_BIN:-}" && -x "$SOUQ_BIN" ]] || die "no souq binary: set SOUQ_BIN (e.g. after cargo build -p souq --locked)"

souq_venv observability-venv "$OBSERVABILITY_PINS"
venv="$VENV"

export PYTHONDONTWRITEBYTECODE=1
# SIGTERM first (the tests then stop souq and prometheus and remove their temp dirs),
# SIGKILL 30 s later.
rc=0
timeout --kill-after=30 "$timeout_s" "$venv/bin/python" "$root/tests/observability/run.py" "$root" "$@" || rc=$?
if [[ "$rc" == 124 ]]; then
    die "the tests did not finish within ${timeout_s} s"
fi
exit "$rc"
