"""PostgreSQL, Redis and an SMTP sink for tests/chart/run_test.py, as containers on the
run's network. Their image is built (once, cached by a hash of its recipe) from Debian's
packages on the runtime base image Souq already builds: no registry is involved."""
import hashlib
import json
import os
import pathlib
import subprocess
import tempfile
import time

from kubelet import KubeletError, docker, logs

HERE = pathlib.Path(__file__).parent
PACKAGES = "postgresql redis-server"

DOCKERFILE = """ARG BASE
FROM ${{BASE}}
USER root
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {packages} \\
    && rm -rf /var/lib/apt/lists/*
COPY smtp_sink.py /usr/local/bin/smtp_sink.py
"""

# initdb with a password for the souq role (scram over TCP), then a database named souq.
# On a restart of the container (scripts/cluster.py chaos) the data is there: only start
# it, after removing the pid file of the server the restart killed. SIGTERM (docker stop)
# stops the server fast, so a restart is a clean one.
POSTGRES = r"""set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | head -1)
mkdir -p /tmp/pg && chown postgres /tmp/pg
fresh=0
if [ ! -s /tmp/pg/data/PG_VERSION ]; then
  fresh=1
  printf '%s\n' "$PGPASS" > /tmp/pw && chown postgres /tmp/pw
  su postgres -s /bin/sh -c "$bin/initdb -D /tmp/pg/data -U souq --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null"
  rm -f /tmp/pw
  echo 'host all all 0.0.0.0/0 scram-sha-256' >> /tmp/pg/data/pg_hba.conf
fi
rm -f /tmp/pg/data/postmaster.pid
su postgres -s /bin/sh -c "$bin/pg_ctl -D /tmp/pg/data -o \"-c listen_addresses=* -k /tmp/pg\" -w start >/dev/null"
[ "$fresh" = 0 ] || su postgres -s /bin/sh -c "$bin/createdb -h /tmp/pg -U souq souq"
trap 'su postgres -s /bin/sh -c "$bin/pg_ctl -D /tmp/pg/data -m fast stop"; exit 0' TERM
echo 'postgres ready'
tail -f /dev/null & wait
"""


def image(base):
    """The services image on `base`, built when missing; returns its tag."""
    sink = (HERE / "smtp_sink.py").read_text()
    recipe = DOCKERFILE.format(packages=PACKAGES) + sink + base
    tag = "souq-test/chart-services:" + hashlib.sha256(recipe.encode()).hexdigest()[:12]
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory() as ctx:
        pathlib.Path(ctx, "Dockerfile").write_text(DOCKERFILE.format(packages=PACKAGES))
        pathlib.Path(ctx, "smtp_sink.py").write_text(sink)
        p = subprocess.run(["docker", "build", "-q", "--pull=false", "--build-arg", f"BASE={base}", "-t", tag, ctx],
                           capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=900)
        if p.returncode != 0:
            raise KubeletError(f"building {tag} from Debian packages failed: {p.stderr[-2000:]}")
    return tag


def container(kube, name):
    """The Docker name of a service's container."""
    return f"{kube.prefix}-{kube.run_id}-{name}"


def start(kube, tag, password, names=("postgresql", "redis", "mail"), labels=None, durable_redis=False):
    """Starts the services named (default all three); returns {name: ip}. Waits until
    each answers. `labels(name)` gives extra Docker labels per service. `durable_redis`:
    an append-only file (fsync every second, and at a clean stop), so that Redis keeps
    its data across a restart, as a production Redis would."""
    persist = ["--dir", "/tmp", "--appendonly", "yes", "--appendfsync", "everysec"] if durable_redis else \
        ["--appendonly", "no"]
    common = ["run", "-d", "--pull", "never", "--label", kube.label, "--network", kube.network]
    started = {}
    for name, extra, cmd in [
        ("postgresql", ["-e", f"PGPASS={password}"], ["sh", "-c", POSTGRES]),
        ("redis", ["--user", "redis"], ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no",
                                        "--requirepass", password, "--save", "", *persist]),
        ("mail", ["--user", "65534:65534"], ["python3", "/usr/local/bin/smtp_sink.py", "2525"]),
    ]:
        if name not in names:
            continue
        ip = kube.take_ip()
        cname = container(kube, name)
        for k, v in (labels(name) if labels else {}).items():
            extra = [*extra, "--label", f"{k}={v}"]
        # The base's ENTRYPOINT is the runtime shim: replace it.
        docker(*common, "--name", cname, "--ip", ip, "--network-alias", name, *extra,
               "--entrypoint", cmd[0], tag, *cmd[1:])
        started[name] = (ip, cname)
    ready = {"postgresql": "postgres ready", "redis": "Ready to accept connections", "mail": "smtp sink on"}
    deadline = time.monotonic() + 120
    for name, (ip, cname) in started.items():
        while ready[name] not in docker("logs", cname, check=False).stdout + docker("logs", cname, check=False).stderr:
            if time.monotonic() > deadline or not kube.running(cname):
                raise KubeletError(f"{name} did not start:\n{logs(cname)}")
            time.sleep(0.5)
    return {name: ip for name, (ip, _) in started.items()}


def mails(kube):
    """Every mail the sink received: dicts with to, data (the raw message)."""
    out = docker("logs", container(kube, "mail"), check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def redis_keys(kube, password):
    """The keys in Redis (at most 1000): the edges' rate limits and metering land there."""
    out = docker("exec", container(kube, "redis"), "redis-cli", "-a", password, "--no-auth-warning",
                 "--scan", check=False).stdout
    return out.split()[:1000]
