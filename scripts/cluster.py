#!/usr/bin/env python3
"""A Souq cluster of simulated hosts in Docker, from the Helm chart, and a chaos driver.

    cluster.py up [--agents 3] [--control-planes 2] [--edges 2] [--image TAG] [--json]
    cluster.py status
    cluster.py down
    cluster.py chaos [--short] [--faults 1,2,3,4,5,6,7,8,9]

`up` builds Souq's image from the debug binary when needed (or takes --image), renders
deploy/helm/souq, starts PostgreSQL and Redis, the migration Job, then every workload as
containers with their own addresses on a private network; agents on nodes of their own
(regions sa-riyadh, sa-riyadh, ae-dubai), each with its data dir on this host. It prints
one JSON object: containers (name, role, node, ip), edge URLs, the PostgreSQL URL, the
mail dir and the admin token. Two networks: control (control planes, PostgreSQL, Redis,
edges, agents) and data (edges, agents, control planes; the agents' advertised pod IPs). `status` adds the leading control plane and the nodes;
`down` removes everything. The state is kept in --state (/tmp/souq-cluster/state.json).
`chaos` drives the cluster under load through faults and prints one row per fault;
it exits 1 when a target is missed (see tests/cluster/chaos.py).

Needs root, Docker and the pinned Helm SDK: run it through scripts/test-cluster.sh, or
with the chart venv's python (it re-executes itself with it when found).
Progress goes to stderr, results to stdout.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_PYTHON = pathlib.Path(os.environ.get("SOUQ_CACHE_DIR", "/var/cache/souq")) / "chart-venv/bin/python"

try:
    import helm_python  # noqa: F401 - only to know whether this interpreter has it
except ImportError:
    # sys.prefix, not the executable: a venv's python is a symlink to the system's.
    if VENV_PYTHON.is_file() and pathlib.Path(sys.prefix) != VENV_PYTHON.parent.parent:
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.exit("cluster.py needs the Helm SDK: run scripts/test-cluster.sh once (it makes the venv)")

sys.path.insert(0, str(ROOT / "tests/cluster"))
import chaos  # noqa: E402
import harness  # noqa: E402
from kubelet import KubeletError  # noqa: E402


def lease_ttl():
    """The control plane's lease TTL (leader::TTL in control-plane/src/leader.rs), 6 s if unreadable."""
    import re

    try:
        m = re.search(r"pub const TTL: Duration = Duration::from_secs\((\d+)\)", (ROOT / "control-plane/src/leader.rs").read_text())
    except OSError:
        m = None
    return float(m.group(1)) if m else 6.0


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", default=str(harness.DEFAULT_STATE), help="the cluster's state file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster")
    up.add_argument("--agents", type=int, default=3)
    up.add_argument("--control-planes", type=int, default=2)
    up.add_argument("--edges", type=int, default=2)
    up.add_argument("--image", default=None, help="Souq's image (default: built from the debug binary)")
    up.add_argument("--json", action="store_true", help="compact JSON (default: indented)")
    st = sub.add_parser("status", help="the cluster, its leader and its nodes")
    st.add_argument("--json", action="store_true")
    sub.add_parser("down", help="remove the cluster")
    ch = sub.add_parser("chaos", help="faults under load, one row each")
    ch.add_argument("--short", action="store_true", help="lighter load; judge answers, metering, placements, not times")
    ch.add_argument("--faults", default=None,
                    help="which faults, in order (default all; --short 1,2,4,5): 1 agent killed, 2 host lost, "
                         "3 agent partitioned, 4 leader killed, 5 leader frozen, 6 PostgreSQL restart, "
                         "7 Redis restart, 8 edge killed, 9 rolling upgrade")
    ch.add_argument("--upgrade-drain", action="store_true",
                    help="fault 9: drain each agent's node (admin REST) before its restart, uncordon after "
                         "(default: restart only, then wait for full replicas, as the issue asks)")
    ch.add_argument("--threads", type=int, default=None, help="calling threads (default 4, --short 2)")
    ch.add_argument("--pause", type=float, default=0.1, help="seconds each thread waits between calls")
    ch.add_argument("--lease-s", type=float, default=lease_ttl(),
                    help="the control plane's lease TTL (default: leader::TTL): fault 5 freezes the leader this + 5 s")
    ch.add_argument("--node-ttl", type=float, default=8,
                    help="before the admin REST exists: a node whose heartbeat is older is taken as down")
    args = ap.parse_args(argv)
    if args.cmd == "chaos" and args.threads is None:
        args.threads = 2 if args.short else 4
    if args.cmd == "chaos" and not 1 <= args.threads <= 64:
        ap.error("--threads: 1 to 64")
    return args


def main(argv=None):
    args = parse(argv if argv is not None else sys.argv[1:])
    try:
        if args.cmd == "chaos":
            return chaos.chaos(args)
        out = {"up": harness.up, "status": harness.status, "down": harness.down}[args.cmd](args)
        print(json.dumps(out, indent=None if getattr(args, "json", False) else 1))
        return 0
    except (harness.ClusterError, KubeletError, RuntimeError, subprocess.SubprocessError, helm_python.HelmError) as e:
        print(f"cluster.py {args.cmd}: {e}", file=sys.stderr)
        if args.cmd == "up" and pathlib.Path(args.state).exists():
            print(f"cluster.py up: remove what was made with: {sys.argv[0]} --state {args.state} down", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
