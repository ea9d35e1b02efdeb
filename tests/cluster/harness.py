"""A Souq cluster of several simulated hosts in Docker, from the Helm chart: `up`,
`status` and `down` of scripts/cluster.py. Renders deploy/helm/souq, starts PostgreSQL
and Redis (tests/chart/services.py), runs the migration Job, then every workload as
containers (tests/chart/kubelet.py). Each agent runs on its own node name with its own
data dir on the real host; control planes and edges get node names of their own, so
killing an agent's host touches nothing else.

Two networks, so that an agent can be cut off from the control plane alone:
  - control: control planes, PostgreSQL, Redis, edges and agents. The Services' names
    (the control plane's, which agents and edges dial) resolve here only.
  - data: edges, agents and control planes. An agent's pod IP, the one address it
    advertises, is on this network: edges and control planes dial it there.
An agent disconnected from the control network can no longer reach the control plane
(no heartbeats, the control plane's name does not resolve), while edges, and the control
planes, still reach it on the data network.

Every container carries the labels souq.chart-run=<id>, souq.role and souq.node=<node>.
The agent's sandboxes and instances carry souq.node=<node> too, and souq.kind (and
souq.instance): an agent removes, at start, only containers with its node's name and a
kind, so it leaves itself alone.
"""
import base64
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests/chart"))
import run_test  # noqa: E402
import services  # noqa: E402
from kubelet import Kubelet, KubeletError, docker  # noqa: E402

RELEASE, NAMESPACE = run_test.RELEASE, run_test.NAMESPACE
PREFIX = "souq-cluster"
STATE_ROOT = pathlib.Path("/tmp/souq-cluster")
DEFAULT_STATE = STATE_ROOT / "state.json"
REGIONS = ("sa-riyadh", "sa-riyadh", "ae-dubai")
REGION_LABEL = "topology.kubernetes.io/region"
# The control plane runs as this user (values controlPlane.podSecurityContext): the mail
# dir must be writable by it.
CONTROL_PLANE_UID = 10001
# Bounds on waits (seconds).
REGISTER_WITHIN = 180
READY_WITHIN = 120


def say(msg):
    print(f"==> [+{time.monotonic() - run_test.STARTED:5.1f}s] {msg}", file=sys.stderr, flush=True)


# run_test's steps (the migration Job) report through this too: stdout is for results.
run_test.say = say


class ClusterError(Exception):
    """up, status or down could not do what was asked."""


# --- state ----------------------------------------------------------------------------
def load_state(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        raise ClusterError(f"no cluster state at {path}: run `scripts/cluster.py up` first") from None


def save_state(path, state):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.chmod(tmp, 0o600)  # it holds the admin token and the database password
    tmp.replace(path)


def public(state):
    """The JSON `up` and `status` print: what a test needs to drive the cluster."""
    keys = ("id", "image", "network", "data_network", "containers", "edges", "database_url", "mail_dir", "admin_token", "agent_nodes")
    return {k: state.get(k) for k in keys}


# --- the image --------------------------------------------------------------------------
def debug_binary():
    target = os.environ.get("CARGO_TARGET_DIR") or f"{os.environ.get('SOUQ_CACHE_DIR', '/var/cache/souq')}/target"
    return pathlib.Path(os.environ.get("SOUQ_BIN") or f"{target}/debug/souq")


def ensure_image(tag):
    """`tag` when given (it must exist), else Souq's image from a copy of the debug binary
    (others rebuild it all the time), tagged by the copy's hash and built only when missing."""
    if tag:
        if docker("image", "inspect", tag, check=False).returncode != 0:
            raise ClusterError(f"image {tag} is not in the Docker engine")
        return tag
    src = debug_binary()
    if not src.is_file():
        raise ClusterError(f"no souq binary at {src}: cargo build -p souq-cli --locked, or pass --image/SOUQ_BIN")
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    copy = STATE_ROOT / f"souq-bin-{os.getpid()}"
    try:
        shutil.copy2(src, copy)
        digest = subprocess.run(["sha256sum", str(copy)], capture_output=True, text=True, check=True).stdout[:12]
        tag = f"souq-test/cluster:{digest}"
        if docker("image", "inspect", tag, check=False).returncode == 0:
            say(f"image {tag} present")
            return tag
        say(f"building {tag} from {src} (--no-runtimes: the runtime images are in this Engine)")
        p = subprocess.run(["bash", str(ROOT / "deploy/image/build.sh"), "--binary", str(copy), "--tag", tag, "--no-runtimes"],
                           capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            raise ClusterError(f"deploy/image/build.sh failed:\n{p.stderr[-3000:]}")
        # One image per debug build: drop the older ones (the Engine keeps any in use).
        old = docker("images", "souq-test/cluster", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
        for o in old:
            if o != tag:
                docker("rmi", o, check=False)
        return tag
    finally:
        copy.unlink(missing_ok=True)


# --- up -----------------------------------------------------------------------------------
def node_names(cid, agents, control_planes, edges):
    """Agent nodes (name -> region) and the other roles' nodes, all unique to this cluster:
    agents remove containers by node name, so two clusters must never share one."""
    agent_nodes = {f"{cid}-n{i + 1}": REGIONS[i % len(REGIONS)] for i in range(agents)}
    return agent_nodes, [f"{cid}-cp{i + 1}" for i in range(control_planes)], [f"{cid}-e{i + 1}" for i in range(edges)]


def values(image, password, placeholder_dir, mail_dir, regions, control_planes, edges):
    repo, tag = image.rsplit(":", 1)
    return {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
        "publicUrl": f"http://{RELEASE}-souq-edge",
        "secrets": {
            "database": {"url": f"postgres://souq:{password}@postgresql:5432/souq", "existingSecret": ""},
            "redis": {"url": f"redis://:{password}@redis:6379", "existingSecret": ""},
            "smtp": {"url": "", "existingSecret": ""},
        },
        "mail": {"dir": mail_dir},
        "controlPlane": {"replicas": control_planes},
        "edge": {"replicas": edges},
        "agent": {"dataDir": placeholder_dir, "regionFromNodeLabel": {"label": REGION_LABEL, "values": sorted(set(regions))}},
        "tests": {"enabled": False},
    }


def rewrite(obj, old, new):
    """Every string under obj that starts with `old`, with that prefix replaced by `new`:
    one agent data dir per node, the same path inside and outside its container."""
    if isinstance(obj, dict):
        return {k: rewrite(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rewrite(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    return obj


def install(kube, data, objs, cid, root, placeholder, cp_nodes, edge_nodes):
    """Helm's install order (pre-install hooks, then the release), with Deployment
    replicas spread over their own nodes and each DaemonSet once per matching node."""
    pre = sorted((o for o in objs if "pre-install" in run_test.hook(o)[0]),
                 key=lambda o: (run_test.hook(o)[1], o["kind"] == "Job"))
    for o in pre:
        if o["kind"] in ("Secret", "ConfigMap"):
            kube.add_config(o)
        elif o["kind"] == "Job":
            run_test.run_job(kube, o)
            # hook-succeeded: Helm deletes the Job, and with it its pod.
            for p in [p for p in kube.pods if p.kind == "Job"]:
                docker("rm", "-f", *[n for _, n in p.containers], check=False)
                kube.pods.remove(p)
        else:
            raise KubeletError(f"pre-install hook of kind {o['kind']} is not supported")
    release = [o for o in objs if not run_test.hook(o)[0]]
    for o in release:
        if o["kind"] in ("Secret", "ConfigMap"):
            kube.add_config(o)
    pods = []
    for o in release:
        name, spec = o["metadata"]["name"], o.get("spec") or {}
        role = (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
        if o["kind"] == "Deployment":
            nodes = cp_nodes if role == "control-plane" else edge_nodes
            for i in range(spec.get("replicas", 1)):
                pods.append(kube.new_pod("Deployment", name, spec["template"], i, node=nodes[i % len(nodes)]))
        elif o["kind"] == "DaemonSet":
            for node in kube.nodes_for(spec["template"]):
                tpl = rewrite(spec["template"], placeholder, f"{root}/{node}/")
                pods.append(kube.new_pod("DaemonSet", name, tpl, node.rsplit("-", 1)[1], node=node))
    kube.bind_services([o for o in release if o["kind"] == "Service"])
    for p in pods:
        role = p.labels.get("app.kubernetes.io/component", "")
        p.docker_labels = {"souq.role": role, "souq.node": p.node, "souq.cluster": cid}
        # Agents: the pod IP (advertised) on the data network, and a leg on the control
        # network to reach the control plane's Service. Others: the other way round.
        if role == "agent":
            p.network, control_ip, p.ip = data.network, p.ip, data.take_ip()
            p.extra_networks = [(kube.network, control_ip)]
        else:
            p.extra_networks = [(data.network, data.take_ip())]
    return pods


class Network:
    """A further network of the cluster (the data network): a free /24, its addresses."""

    def __init__(self, name, label):
        self.name, self.network, self.next_ip = name, name, 10
        for _ in range(8):
            self.prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
            p = docker("network", "create", "--label", label, "--subnet", f"{self.prefix}.0/24",
                       "--gateway", f"{self.prefix}.1", name, check=False)
            if p.returncode == 0:
                return
            if "overlap" not in p.stderr:
                break
        raise ClusterError(f"docker network create {name}: {p.stderr.strip()}")

    def take_ip(self):
        ip = f"{self.prefix}.{self.next_ip}"
        self.next_ip += 1
        return ip


def psql(state, sql, timeout=20):
    """Runs one query in the PostgreSQL container; returns its rows parsed from JSON, or
    None when the query fails (e.g. a table that a migration has not made yet)."""
    wrapped = f"select coalesce(json_agg(t), '[]'::json) from ({sql}) t"
    p = docker("exec", state["postgres_container"], "psql", "-h", "/tmp/pg", "-U", "souq", "-d", "souq",
               "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", wrapped, check=False, timeout=timeout)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip() or "[]")


def up(args):
    if pathlib.Path(args.state).exists():
        raise ClusterError(f"{args.state} exists: a cluster is up (scripts/cluster.py down first)")
    if args.agents < 1 or args.control_planes < 1 or args.edges < 1:
        raise ClusterError("--agents, --control-planes and --edges must each be at least 1")
    image = ensure_image(args.image)
    cid = uuid.uuid4().hex[:6]
    root = STATE_ROOT / cid
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    mail_dir = root / "mail"
    mail_dir.mkdir()
    os.chown(mail_dir, CONTROL_PLANE_UID, CONTROL_PLANE_UID)
    password = uuid.uuid4().hex
    agent_nodes, cp_nodes, edge_nodes = node_names(cid, args.agents, args.control_planes, args.edges)
    kube = Kubelet(cid, NAMESPACE, cp_nodes[0], f"10.{random.randint(200, 250)}.{random.randint(0, 255)}", say,
                   prefix=PREFIX, scratch_dir=str(root))
    kube.nodes = {n: {REGION_LABEL: r, "kubernetes.io/hostname": n} for n, r in agent_nodes.items()}
    state = {"id": cid, "root": str(root), "image": image, "network": kube.network, "label": kube.label,
             "agent_nodes": agent_nodes, "mail_dir": str(mail_dir), "containers": [], "password": password,
             "postgres_container": services.container(kube, "postgresql")}
    save_state(args.state, state)  # from here on, `down` finds whatever was made
    placeholder = f"{root}/node/"
    vals = values(image, password, placeholder + "agent", str(mail_dir), list(agent_nodes.values()),
                  args.control_planes, args.edges)
    objs = run_test.render(ROOT / "deploy/helm/souq", vals)
    secret = next(o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == f"{RELEASE}-souq")
    state["admin_token"] = base64.b64decode(secret["data"]["admin-token"]).decode()
    say(f"rendered {len(objs)} objects with image {image}")
    tags = subprocess.run(["bash", str(ROOT / "deploy/runtimes/build.sh"), "--print-tags"],
                          capture_output=True, text=True, check=True).stdout
    base = dict(line.split("=", 1) for line in tags.split())["python"]
    kube.make_network()
    state["data_network"] = f"{kube.network}-data"
    save_state(args.state, state)
    data = Network(state["data_network"], kube.label)
    svc_node = f"{cid}-db"
    ips = services.start(kube, services.image(base), password, names=("postgresql", "redis"), durable_redis=True,
                         labels=lambda name: {"souq.role": "postgres" if name == "postgresql" else "redis",
                                              "souq.node": svc_node, "souq.cluster": cid})
    for name, ip in ips.items():
        state["containers"].append({"name": services.container(kube, name), "role": "postgres" if name == "postgresql" else "redis",
                                    "node": svc_node, "ip": ip, "hostname": None})
    state["database_url"] = f"postgres://souq:{password}@{ips['postgresql']}:5432/souq"
    save_state(args.state, state)
    say(f"PostgreSQL and Redis up: {ips}")
    pods = install(kube, data, objs, cid, root, placeholder, cp_nodes, edge_nodes)
    for p in pods:
        kube.start(p)
        name = p.containers[0][1]
        # What a restart from another image needs (chaos's rolling upgrade): the create
        # arguments, the further networks, the container spec (probes), the grace.
        state["containers"].append({"name": name, "role": p.docker_labels["souq.role"], "node": p.node, "ip": p.ip,
                                    "hostname": p.name[:63], "network": p.network or kube.network,
                                    "extra_networks": p.extra_networks, "create_args": p.create_args[name],
                                    "spec": p.containers[0][0], "pod_name": p.name,
                                    "grace_s": p.spec.get("terminationGracePeriodSeconds", 30)})
        save_state(args.state, state)
        say(f"started {p.docker_labels['souq.role']} {p.name} on node {p.node} at {p.ip}")
    kube.wait_ready(pods)
    edge_port = next(int(e["value"].rsplit(":", 1)[1]) for o in objs if o["kind"] == "Deployment"
                     and o["metadata"]["name"].endswith("-edge")
                     for e in o["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "SOUQ_EDGE_ADDR")
    state["edges"] = [f"http://{c['ip']}:{edge_port}" for c in state["containers"] if c["role"] == "edge"]
    save_state(args.state, state)
    wait_registered(state)
    return public(state)


def wait_registered(state):
    """Until every agent node is in the nodes table with a fresh heartbeat and every edge
    answers /readyz."""
    import urllib.request

    deadline = time.monotonic() + REGISTER_WITHIN
    want = set(state["agent_nodes"])
    while True:
        rows = psql(state, "select name from nodes where last_heartbeat > now() - interval '20 seconds'") or []
        have = {r["name"] for r in rows}
        ready = 0
        for url in state["edges"]:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=3) as r:
                    ready += r.status == 200
            except OSError:
                pass
        if want <= have and ready == len(state["edges"]):
            say(f"{len(want)} agents registered, {ready} edges ready")
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"within {REGISTER_WITHIN} s: agents registered {sorted(have)} of {sorted(want)}, "
                               f"edges ready {ready} of {len(state['edges'])}")
        time.sleep(1)


# --- status -------------------------------------------------------------------------------
def leader(state):
    """The control plane holding the reconciler lease now: (container or None, lease row),
    or (None, None) while there is no lease table. Its holder is <hostname>/<8 hex>."""
    rows = psql(state, "select holder, epoch, expires_at > now() as live, extract(epoch from expires_at - now())"
                       " as expires_in_s from control_plane_lease where name = 'reconciler'")
    if not rows:
        return None, None
    row = rows[0]
    host = (row.get("holder") or "").split("/", 1)[0]
    match = next((c for c in state["containers"] if c["role"] == "control-plane" and c["hostname"] == host), None)
    return (match if row.get("live") else None), row


def nodes(state, timeout=5):
    """The admin REST's node list through the first edge that answers, or None while the
    admin REST is not there (404) or no edge answers."""
    import urllib.error
    import urllib.request

    for url in state.get("edges") or []:
        r = urllib.request.Request(url + "/api/v1/admin/nodes", headers={"authorization": f"Bearer {state['admin_token']}"})
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return json.loads(resp.read()).get("nodes")
        except urllib.error.HTTPError:
            return None
        except (OSError, ValueError):
            continue
    return None


def heartbeats(state):
    """Seconds since each agent node's last heartbeat, from the nodes table (the fallback
    while the admin REST is not there)."""
    rows = psql(state, "select name, extract(epoch from now() - last_heartbeat) as age_s from nodes") or []
    return {r["name"]: float(r["age_s"]) for r in rows}


def running(names):
    """{container name: State.Status} for the names given."""
    if not names:
        return {}
    p = docker("inspect", "-f", "{{.Name}} {{.State.Status}}", *names, check=False)
    out = {}
    for line in p.stdout.splitlines():
        n, _, s = line.partition(" ")
        out[n.lstrip("/")] = s
    return out


def status(args):
    state = load_state(args.state)
    out = public(state)
    states = running([c["name"] for c in state["containers"]])
    out["containers"] = [{**c, "state": states.get(c["name"], "missing")} for c in state["containers"]]
    lead, row = leader(state)
    out["leader"] = {"container": lead and lead["name"], "lease": row}
    admin = nodes(state)
    out["nodes"] = admin if admin is not None else {"source": "nodes table (no admin REST yet)",
                                                    "heartbeat_age_s": heartbeats(state)}
    return out


# --- down ---------------------------------------------------------------------------------
def down(args):
    """Removes the cluster's containers, its agents' sandboxes and instances (by souq.node),
    the network and the data dirs. Works on a half-made cluster too."""
    try:
        state = load_state(args.state)
    except ClusterError:
        return {"removed": 0, "note": f"no state at {args.state}"}
    ids = docker("ps", "-aq", "--filter", f"label={state['label']}", check=False).stdout.split()
    for node in state.get("agent_nodes") or {}:
        ids += docker("ps", "-aq", "--filter", f"label=souq.node={node}", check=False).stdout.split()
    ids = sorted(set(ids))
    if ids:
        docker("rm", "-f", "-v", *ids, check=False, timeout=300)
    for net in (state["network"], state.get("data_network")):
        if net:
            docker("network", "rm", net, check=False)
    # The rolling upgrade's tag of the same image (the Engine keeps it while in use).
    if state.get("upgraded_image"):
        docker("rmi", state["upgraded_image"], check=False)
    root = pathlib.Path(state["root"])
    if root.parent == STATE_ROOT:  # never anything outside our own tree
        shutil.rmtree(root, ignore_errors=True)
    pathlib.Path(args.state).unlink(missing_ok=True)
    return {"removed": len(ids), "network": state["network"], "root": str(root)}
