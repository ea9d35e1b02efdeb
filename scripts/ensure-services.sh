#!/usr/bin/env bash
# Ensures the services Souq's tests need are installed and running on a Debian
# bookworm machine, whatever state it is in: Docker Engine, PostgreSQL 15 (unix
# socket /var/run/postgresql, superuser role and database "root", peer auth, no
# password), Redis on 127.0.0.1:6379, and an SMTP sink on 127.0.0.1:2525 (aiosmtpd from
# PyPI in the venv /opt/souq-venv) that stores every mail in the Maildir
# /var/tmp/souq-mail. Installs missing Debian packages with apt-get (apt-get update
# only when something must be installed). Runs as root.
# Idempotent; when everything already runs it takes well under a few seconds.
# Prints one line per service saying what it did.
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=main
PG_SOCKET_DIR=/var/run/postgresql
DOCKERD_LOG=/var/log/souq-dockerd.log
REDIS_LOG=/var/log/souq-redis.log
SMTP_ADDR=127.0.0.1
SMTP_PORT=2525
SMTP_MAILDIR=/var/tmp/souq-mail
SMTP_LOG=/var/log/souq-smtp.log
SMTP_VENV=/opt/souq-venv
AIOSMTPD_VERSION=1.4.6

die() { echo "ensure-services: $*" >&2; exit 1; }
note() { echo "ensure-services: $*" >&2; }
report() { printf '%-9s %s\n' "$1:" "$2"; }

[[ "$(id -u)" == 0 ]] || die "must run as root"

# --- apt, only when something is missing ------------------------------------
APT_UPDATED=0
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
cleanup() { if [[ "$POLICY_RC_OURS" == 1 ]]; then rm -f "$POLICY_RC"; fi; }
trap cleanup EXIT

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ "$APT_UPDATED" == 0 ]]; then
        note "apt-get update"
        apt-get update -q >&2
        APT_UPDATED=1
    fi
    # Keep package scripts from starting services with their own settings;
    # this script starts them itself, with known flags.
    if [[ ! -e "$POLICY_RC" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    note "apt-get install $*"
    apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2
    cleanup
    POLICY_RC_OURS=0
}

# wait_for SECONDS COMMAND...: polls every 0.2 s until COMMAND succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# --- Docker Engine ----------------------------------------------------------
ensure_docker() {
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        report docker "already running"
        return
    fi
    local did=""
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_install docker.io
        did="installed, "
    fi
    local pid=""
    [[ -r /var/run/docker.pid ]] && pid="$(cat /var/run/docker.pid)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        note "dockerd process exists but is not answering yet; waiting"
    else
        setsid -f dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null
    fi
    wait_for 60 docker info || die "Docker Engine not reachable after 60 s (see $DOCKERD_LOG)"
    report docker "${did}started (log $DOCKERD_LOG)"
}

# --- PostgreSQL -------------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_SOCKET_DIR"; }
as_postgres() { su postgres -s /bin/sh -c "$1"; }

ensure_postgres() {
    local did="already running"
    if ! command -v pg_isready >/dev/null 2>&1 || ! pg_ready; then
        if [[ ! -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ]] ||
            ! command -v pg_ctlcluster >/dev/null 2>&1; then
            apt_install postgresql
            did="installed, started"
        else
            did="started"
        fi
        install -d -o postgres -g postgres -m 2775 "$PG_SOCKET_DIR"
        if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { f = 1 } END { exit !f }'; then
            note "creating cluster $PG_VERSION/$PG_CLUSTER"
            pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2
            did="${did/started/cluster created, started}"
        fi
        if ! pg_ready; then
            pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2 ||
                pg_ready || die "pg_ctlcluster $PG_VERSION $PG_CLUSTER start failed"
        fi
        wait_for 30 pg_ready ||
            die "PostgreSQL not accepting connections on $PG_SOCKET_DIR after 30 s"
    fi
    local extra=""
    if [[ "$(as_postgres "psql -h $PG_SOCKET_DIR -XtAc \"select 1 from pg_roles where rolname = 'root'\"")" != 1 ]]; then
        as_postgres "createuser -h $PG_SOCKET_DIR -s root"
        extra+=", role root created"
    fi
    if [[ "$(psql -h "$PG_SOCKET_DIR" -d postgres -XtAc "select 1 from pg_database where datname = 'root'")" != 1 ]]; then
        createdb -h "$PG_SOCKET_DIR" -O root root
        extra+=", database root created"
    fi
    report postgres "${did}${extra} ($PG_SOCKET_DIR)"
}

# --- Redis ------------------------------------------------------------------
redis_ok() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }

ensure_redis() {
    if command -v redis-cli >/dev/null 2>&1 && redis_ok; then
        report redis "already running"
        return
    fi
    local did="started"
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
        did="installed, started"
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
        --logfile "$REDIS_LOG" >&2
    wait_for 10 redis_ok || die "Redis not answering PONG on 127.0.0.1:6379 after 10 s (see $REDIS_LOG)"
    report redis "$did (127.0.0.1:6379)"
}

# --- SMTP sink for the mail tests -------------------------------------------
# A real SMTP exchange (greeting, NOOP, QUIT), not just an open port.
smtp_ok() {
    local py="$SMTP_VENV/bin/python"
    [[ -x "$py" ]] || py=python3
    "$py" -c "import smtplib, sys
s = smtplib.SMTP('$SMTP_ADDR', $SMTP_PORT, timeout=2)
code = s.noop()[0]
s.quit()
sys.exit(code != 250)"
}
venv_ok() { "$SMTP_VENV/bin/python" -m pip --version; }
aiosmtpd_ok() {
    "$SMTP_VENV/bin/python" -c "import sys, aiosmtpd; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')"
}

# Makes the venv with the python3 on PATH (maybe pyenv's); on a Debian python3
# without ensurepip, installs python3-venv and uses Debian's python3.
make_venv() {
    rm -rf "$SMTP_VENV"
    if command -v python3 >/dev/null 2>&1 && python3 -m venv "$SMTP_VENV" >&2 && venv_ok >/dev/null 2>&1; then
        return
    fi
    rm -rf "$SMTP_VENV"
    apt_install python3-venv
    /usr/bin/python3 -m venv "$SMTP_VENV" >&2
    venv_ok >/dev/null 2>&1 || die "python3 -m venv $SMTP_VENV made no working pip"
}

ensure_smtp() {
    if smtp_ok >/dev/null 2>&1; then
        report smtp "already running ($SMTP_ADDR:$SMTP_PORT, Maildir $SMTP_MAILDIR)"
        return
    fi
    local did="started"
    if ! aiosmtpd_ok >/dev/null 2>&1; then
        venv_ok >/dev/null 2>&1 || make_venv
        note "pip install aiosmtpd==$AIOSMTPD_VERSION into $SMTP_VENV"
        "$SMTP_VENV/bin/python" -m pip install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2
        did="installed, started"
    fi
    mkdir -p "$SMTP_MAILDIR"/{new,cur,tmp}
    # Mailbox takes the Maildir as its one handler argument; -n: stay root, no setuid.
    setsid -f "$SMTP_VENV/bin/python" -m aiosmtpd -n -l "$SMTP_ADDR:$SMTP_PORT" \
        -c aiosmtpd.handlers.Mailbox "$SMTP_MAILDIR" >>"$SMTP_LOG" 2>&1 </dev/null
    wait_for 15 smtp_ok ||
        die "SMTP sink not answering on $SMTP_ADDR:$SMTP_PORT after 15 s (see $SMTP_LOG)"
    report smtp "$did ($SMTP_ADDR:$SMTP_PORT, Maildir $SMTP_MAILDIR, log $SMTP_LOG)"
}

ensure_docker
ensure_postgres
ensure_redis
ensure_smtp
