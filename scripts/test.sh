#!/usr/bin/env bash
# Souq's whole test suite, from a fresh machine or a prepared one:
#   1. installs and starts what the tests need (Docker Engine, PostgreSQL, Redis),
#   2. builds the sandbox runtime images if they are missing,
#   3. builds, lints, checks module cycles, tests the Helm chart offline and runs it in
#      Docker from Souq's own image (once, on PostgreSQL in containers), checks the alert
#      rules and scrapes and traces a `souq up` with a real Prometheus and OTLP receiver,
#   4. runs every test on SQLite (the embedded default), then again on PostgreSQL.
# Idempotent. Set CARGO_TARGET_DIR to share a build cache between checkouts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services"
bash scripts/ensure-services.sh

step "runtime images"
bash deploy/runtimes/build.sh

step "build and lint"
cargo build --workspace --tests --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
python3 scripts/module-cycles.py
# Test hooks (fault injection) must never reach the `souq` binary that users run.
if cargo tree -p souq --locked -e features -i souq-edge-proxy | grep -q fault-injection; then
    echo "the souq binary would carry the fault-injection hooks" >&2
    exit 1
fi

step "Helm chart, offline (no database: runs once)"
SOUQ_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/souq" bash scripts/test-chart.sh

step "observability: alert rules, Prometheus and OTLP against souq up (runs once)"
SOUQ_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/souq" bash scripts/test-observability.sh

step "Helm chart, run in Docker by a kubelet stand-in (runs once)"
SOUQ_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/souq" bash scripts/test-chart-run.sh

step "cluster chaos, short (runs once)"
SOUQ_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/souq" bash scripts/test-cluster.sh --short

step "tests on SQLite"
cargo test --workspace --locked

step "tests on PostgreSQL"
# Databases of earlier runs that were killed before they could drop their own.
psql -h /var/run/postgresql -d postgres -XAtc "select datname from pg_database where datname like 'souq_test_%'" |
    while read -r db; do dropdb -h /var/run/postgresql --force "$db"; done
SOUQ_TEST_PG_URL='postgres://root@localhost/{db}?host=/var/run/postgresql' cargo test --workspace --locked

step "all tests passed"
