"""The chaos driver of scripts/cluster.py: a marketplace under steady load while faults
hit the cluster one after another, with what each cost.

Setup: a provider and a consumer sign up through an edge (verified from the .eml the
control plane wrote), the provider creates 3 Python APIs, gives each a plan with room
for the load, publishes and deploys them with 2 replicas; the consumer subscribes and
makes a key, so every call is metered. Load: threads calling the APIs through both edges
with the key (client timeout: the route timeout + 5 s) and one thread of executes.

Faults, in turn (all by default, --short 1,2,4,5): 1 an agent SIGKILLed (its instance
containers keep running), 2 a whole host lost (every container labelled
souq.node=<it>, its agent included), 3 an agent cut off from the control network (the
path of its heartbeats), still reachable by edges and control
planes on the data network, then from both networks for PARTITION_ALL_S, 4 the leading
control plane killed, 5 the leader frozen (docker pause) for the lease + 5 s, 6 a
PostgreSQL restart, 7 a Redis restart, 8 an edge SIGKILLed and started again (the same
container, so the same edge id), 9 a rolling upgrade of every workload, one at a time, on
a new tag of the same image. After each, what was hit comes back, and the cluster must
settle before the next.

Per fault: time to detect and to recover (see LEGEND), calls sent / 2xx / definite
errors / lb 502 / without an answer, metered calls vs 2xx, double placements, orphans.
"""
import collections
import json
import pathlib
import subprocess
import sys
import threading
import time

import client
import harness
from harness import docker
from kubelet import Pod, create_and_start, wait_ready

FAULTS = {1: "agent SIGKILL", 2: "host lost", 3: "agent partitioned", 4: "leader killed", 5: "leader frozen",
          6: "postgres restart", 7: "redis restart", 8: "edge SIGKILL", 9: "rolling upgrade"}
ALL_FAULTS, SHORT_FAULTS = "1,2,3,4,5,6,7,8,9", "1,2,4,5"
# Faults with time targets (node down, replicas back, failover) in the full run.
TIMED = (1, 2, 3, 4, 5)
# Fault 3: after the control-plane-only partition, cut off from everything this long.
PARTITION_ALL_S = 10
# Fault 8: the killed edge starts again this long after.
EDGE_DOWN_S = 5
# The edge's route timeout when an API names none (README: a handler past 30 s is a 504).
ROUTE_TIMEOUT = 30
CALL_TIMEOUT = ROUTE_TIMEOUT + 5
EXEC_TIMEOUT_MS = 10_000
REPLICAS = 2
HANDLER = """import os
def handler(event):
    return {{"api": {i}, "path": event["path"], "host": os.uname().nodename}}
"""
# Bounds (seconds) on each wait; past them the fault's row says "-" and the run fails.
DETECT_MAX = 60
RECOVER_MAX = 120
READY_MAX = 120
SETTLE_MAX = 180
ORPHANS_AFTER = 60
FLUSH_MAX = 30
POLL = 0.25
# The full run's targets (seconds).
DETECT_TARGET, RECOVER_TARGET, FAILOVER_TARGET = 10, 15, 15


def say(msg):
    harness.say(msg)


class Stats:
    """Outcomes of one fault's window, by kind; the first few calls that failed in detail
    (when, which edge, what it said), to match against the containers' logs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.execs = collections.Counter()
        self.statuses = collections.Counter()
        self.lost = []

    def add(self, counter, answer, what, path=""):
        with self.lock:
            counter["sent"] += 1
            counter[answer.kind] += 1
            if answer.kind == "error":
                self.statuses[f"{what} {answer.status}"] += 1
            if answer.kind != "ok" and len(self.lost) < 5:
                at = time.strftime("%H:%M:%S", time.gmtime())
                self.lost.append(f"{what} {path} at {at}Z: {answer.kind} {answer.status or ''} {answer.detail} "
                                 f"{str(answer.body)[:300] if answer.body is not None else ''}".rstrip())


class Load:
    """Calls to every API through the edges with the consumer's key, and executes."""

    def __init__(self, edges, apis, key, threads, pause):
        self.edges, self.apis, self.key, self.threads, self.pause = edges, apis, key, threads, pause
        self.exec_token = None
        self.stop_flag = threading.Event()
        self.workers = []
        self.stats = Stats()
        self.seq = 0

    def start(self, stats, exec_token):
        self.stats, self.exec_token = stats, exec_token
        self.stop_flag.clear()
        self.workers = [threading.Thread(target=self._calls, args=(i,), daemon=True) for i in range(self.threads)]
        self.workers.append(threading.Thread(target=self._executes, daemon=True))
        for w in self.workers:
            w.start()

    def stop(self):
        self.stop_flag.set()
        for w in self.workers:
            w.join(CALL_TIMEOUT + 10)

    def _calls(self, i):
        n = 0
        while not self.stop_flag.is_set():
            api = self.apis[(i + n) % len(self.apis)]
            n += 1
            a = self.edges.request("GET", f"/call/{api['slug']}/ping?n={n}", headers={"x-api-key": self.key},
                                   timeout=CALL_TIMEOUT)
            self.stats.add(self.stats.calls, a, "call", api["slug"])
            self.stop_flag.wait(self.pause)

    def _executes(self):
        while not self.stop_flag.is_set():
            a = self.edges.request("POST", "/api/v1/execute",
                                   {"runtime": "python", "code": "print(6 * 7)", "timeout_ms": EXEC_TIMEOUT_MS},
                                   token=self.exec_token, timeout=EXEC_TIMEOUT_MS / 1000 + 5)
            self.stats.add(self.stats.execs, a, "execute")
            self.stop_flag.wait(2.0)


class Chaos:
    def __init__(self, state, args):
        self.state, self.args = state, args
        self.edges = client.Edges(state["edges"])
        self.agents = {c["node"]: c for c in state["containers"] if c["role"] == "agent"}
        self.rows = []
        self.misses = []

    # --- setup ---------------------------------------------------------------------------
    def setup(self):
        e, mail = self.edges, self.state["mail_dir"]
        self.provider = client.User(e, mail, "provider")
        self.consumer = client.User(e, mail, "consumer")
        say(f"provider {self.provider.addr} and consumer {self.consumer.addr} verified from the .eml files")
        self.apis = []
        tag = self.state["id"]
        for i in range(3):
            tok = self.provider.token()
            body = client.expect(e.request("POST", "/api/v1/apis", {"name": f"chaos {tag} {i}", "runtime": "python",
                                                                     "code": HANDLER.format(i=i)}, tok), 201, "create API")
            api = {"id": body["id"], "slug": body["slug"]}
            client.expect(e.request("POST", f"/api/v1/apis/{api['id']}/plans",
                                    {"name": "load", "price_minor": 0, "currency": "SAR", "monthly_quota": 100_000_000,
                                     "rate_limit_per_minute": 1_000_000}, tok), 201, "create plan")
            client.expect(e.request("PATCH", f"/api/v1/apis/{api['id']}", {"public": True}, tok), 200, "publish")
            client.expect(e.request("POST", f"/api/v1/apis/{api['id']}/deploy", {"replicas": REPLICAS}, tok), 202, "deploy")
            self.apis.append(api)
        if not self.wait(lambda: self.full(None), SETTLE_MAX):
            raise RuntimeError(f"the APIs did not reach {REPLICAS} running replicas within {SETTLE_MAX} s: {self.statuses()}")
        ctok = self.consumer.token()
        for api in self.apis:
            client.expect(e.request("POST", f"/api/v1/marketplace/{api['slug']}/subscribe", {"plan": "load"}, ctok), 201,
                          f"subscribe to {api['slug']}")
        self.key = client.expect(e.request("POST", "/api/v1/keys", {"name": "chaos"}, ctok), 201, "create key")["key"]
        for api in self.apis:  # the edges learn the subscription and key within moments
            ok = self.wait(lambda: e.request("GET", f"/call/{api['slug']}/warm", headers={"x-api-key": self.key}).kind == "ok",
                           60)
            if not ok:
                raise RuntimeError(f"{api['slug']} never answered the consumer's key")
        say(f"3 APIs deployed with {REPLICAS} replicas each, subscribed, key works: {[a['slug'] for a in self.apis]}")
        self.load = Load(e, self.apis, self.key, self.args.threads, self.args.pause)

    # --- what the cluster says --------------------------------------------------------------
    def statuses(self):
        tok = self.provider.token()
        out = {}
        for api in self.apis:
            a = self.edges.request("GET", f"/api/v1/apis/{api['id']}/status", token=tok, timeout=5)
            out[api["id"]] = a.body if a.kind == "ok" and isinstance(a.body, dict) else None
        return out

    def full(self, lost_node, empty=False):
        """Every API has its desired replicas running, none on `lost_node`; with `empty`,
        no replica in any state there either (a drained node)."""
        for st in self.statuses().values():
            if not st:
                return False
            up = [r for r in st.get("replicas") or [] if r.get("state") == "running" and r.get("node") != lost_node]
            if st.get("state") != "running" or len(up) < st.get("desired_replicas", REPLICAS):
                return False
            if empty and any(r.get("node") == lost_node for r in st.get("replicas") or []):
                return False
        return True

    def node_state(self, node):
        """'up' or 'down', and where that came from: the admin REST, else heartbeat age in
        the nodes table against --node-ttl (until the admin REST lands)."""
        listed = harness.nodes(self.state)
        if listed is not None:
            row = next((n for n in listed if n.get("name") == node), None)
            return (row or {}).get("state", "missing"), "admin REST"
        age = harness.heartbeats(self.state).get(node)
        return ("down" if age is None or age > self.args.node_ttl else "up"), f"heartbeat age > {self.args.node_ttl:g} s"

    def instance_containers(self):
        """Instance containers of the cluster's agent nodes: (id, node, instance id, state)."""
        p = docker("ps", "-a", "--filter", "label=souq.kind=instance", "--format",
                   '{{.ID}}\t{{.Label "souq.node"}}\t{{.Label "souq.instance"}}\t{{.State}}', check=False)
        rows = [line.split("\t") for line in p.stdout.splitlines() if line.count("\t") == 3]
        return [r for r in rows if r[1] in self.state["agent_nodes"]]

    def instance_rows(self):
        rows = harness.psql(self.state, "select id::text as id, api_id::text as api_id, state from instances")
        return {r["id"]: r for r in rows or []}

    def live_agent_nodes(self):
        st = harness.running([c["name"] for c in self.agents.values()])
        return {n for n, c in self.agents.items() if st.get(c["name"]) == "running"}

    def doubles(self):
        """Serving copies beyond the replicas: per API, running instance containers on
        nodes whose agent runs (a dead agent's containers serve nobody), above its
        replicas; and any instance id in two containers."""
        conts, rows, live = self.instance_containers(), self.instance_rows(), self.live_agent_nodes()
        per_api = collections.Counter()
        ids = collections.Counter(c[2] for c in conts if c[3] == "running")
        for c in conts:
            if c[3] == "running" and c[1] in live:
                per_api[(rows.get(c[2]) or {}).get("api_id")] += 1
        over = sum(max(0, per_api[a["id"]] - REPLICAS) for a in self.apis)
        return over + sum(n - 1 for n in ids.values() if n > 1)

    def orphans(self):
        rows = self.instance_rows()
        return [c for c in self.instance_containers() if c[2] not in rows]

    def metered(self):
        a = self.edges.request("GET", "/api/v1/usage", token=self.consumer.token(), timeout=10)
        if a.kind != "ok":
            return None
        return sum(k.get("calls", 0) for k in a.body.get("keys") or [])

    def settled_metered(self):
        """The consumer's metered calls once the edges' flushes have landed: unchanged for 4 s."""
        last, since, deadline = None, time.monotonic(), time.monotonic() + FLUSH_MAX
        while time.monotonic() < deadline:
            m = self.metered()
            if m != last:
                last, since = m, time.monotonic()
            elif time.monotonic() - since >= 4:
                break
            time.sleep(1)
        return last

    @staticmethod
    def wait(cond, within, poll=1.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if cond():
                    return True
            except (OSError, RuntimeError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
                pass
            time.sleep(poll)
        return False

    # --- faults -------------------------------------------------------------------------
    def busiest_node(self, avoid=()):
        count = collections.Counter()
        for st in self.statuses().values():
            for r in (st or {}).get("replicas") or []:
                if r.get("state") == "running" and r.get("node") in self.agents and r.get("node") not in avoid:
                    count[r["node"]] += 1
        return count.most_common(1)[0][0] if count else sorted(set(self.agents) - set(avoid))[0]

    def healthy(self):
        return all(self.node_state(n)[0] == "up" for n in self.agents) and self.full(None)

    def container(self, role):
        return next(c for c in self.state["containers"] if c["role"] == role)

    def run_fault(self, fault, last_node):
        row = {"fault": f"{fault} {FAULTS[fault]}", "detect": None, "recover": None, "detect_source": "", "target": ""}
        if not self.wait(self.healthy, SETTLE_MAX, poll=2):
            row["note"] = f"not healthy before the fault within {SETTLE_MAX} s"
        before = self.settled_metered()
        stats = Stats()
        self.load.start(stats, self.consumer.token())
        time.sleep(3)
        if fault in (1, 2, 3):
            t0, target = self.fault_node(fault, row, last_node)
        elif fault in (4, 5):
            t0, target = self.fault_leader(fault, row), None
        elif fault in (6, 7):
            t0, target = self.fault_service(fault, row), None
        elif fault == 8:
            t0, target = self.fault_edge(row), None
        else:
            t0, target = self.fault_upgrade(row), None
        say(f"restored {row['target']}; waiting for the cluster to settle")
        settled = self.wait(self.healthy, SETTLE_MAX, poll=2)
        if not settled:
            row["note"] = (row.get("note", "") + f" did not settle within {SETTLE_MAX} s").strip()
        # Double placements from now on, until the orphan check.
        worst = self.doubles()
        while time.monotonic() < t0 + ORPHANS_AFTER:
            worst = max(worst, self.doubles())
            time.sleep(2)
        row["doubles"] = max(worst, self.doubles())
        orphans = self.orphans()
        row["orphans"] = len(orphans)
        row["orphans_at"] = time.monotonic() - t0
        self.load.stop()
        after = self.settled_metered()
        row["calls"] = dict(stats.calls)
        row["execs"] = dict(stats.execs)
        row["statuses"] = dict(stats.statuses)
        row["lost_examples"] = stats.lost
        row["metered"] = None if before is None or after is None else after - before
        if orphans:
            row["orphan_examples"] = orphans[:5]
        self.judge(fault, row)
        self.rows.append(row)
        print_row(row)
        return target

    # --- the faults: each injects, measures, restores; returns when it struck --------------
    def detect_down(self, row, target, t0):
        """Until the node is down (admin REST) or DETECT_MAX."""
        while time.monotonic() < t0 + DETECT_MAX:
            st, row["detect_source"] = self.node_state(target)
            if st == "down":
                row["detect"] = time.monotonic() - t0
                return
            time.sleep(POLL)

    def recover_from(self, row, lost_node, since, t0):
        """Until every API is at full replicas, none on `lost_node`; from `since`."""
        while time.monotonic() < t0 + RECOVER_MAX:
            if self.full(lost_node):
                row["recover"] = time.monotonic() - since
                return
            time.sleep(POLL)

    def fault_node(self, fault, row, last_node):
        """1: the agent SIGKILLed; 2: the host lost (every container of its node); 3: the
        agent cut off from the control network (heartbeats, the control plane's name),
        still reachable on the data network; once its APIs run elsewhere, cut off from
        the data network too for PARTITION_ALL_S. Then the agent (or its networks) back."""
        target = self.busiest_node(avoid=(last_node,) if fault == 2 else ())
        row["target"] = target
        agent = self.agents[target]
        # Sandboxes and instances (they carry a kind; the agent does not). Listed before
        # the kill: a dead agent's sandboxes may stop on their own.
        ids = docker("ps", "-q", "--filter", f"label=souq.node={target}", "--filter", "label=souq.kind",
                     check=False).stdout.split()
        t0 = time.monotonic()
        if fault == 1:
            docker("kill", "--signal", "KILL", agent["name"], check=False)
            time.sleep(2)  # the agent alone was killed: do its sandboxes and instances keep running?
            left = docker("ps", "-q", "--filter", f"label=souq.node={target}", "--filter", "label=souq.kind",
                          check=False).stdout.split()
            row["target"] += f" ({len(left)}/{len(ids)} kept running)"
        elif fault == 2:
            # The host: every container with its souq.node, the agent included.
            every = docker("ps", "-q", "--filter", f"label=souq.node={target}", check=False).stdout.split()
            docker("kill", "--signal", "KILL", *every, check=False)
            row["target"] += f" ({len(every)} containers)"
        else:
            docker("network", "disconnect", self.state["network"], agent["name"], check=False)
        say(f"fault {fault} ({FAULTS[fault]}) on {row['target']}")
        self.detect_down(row, target, t0)
        self.recover_from(row, target, t0 + (row["detect"] or 0), t0)
        say(f"fault {fault}: detect {fmt(row['detect'])} s ({row['detect_source']}), recover {fmt(row['recover'])} s")
        if fault == 3:
            docker("network", "disconnect", self.state["data_network"], agent["name"], check=False)
            say(f"fault 3: {target} cut off from the data network too, for {PARTITION_ALL_S} s")
            time.sleep(PARTITION_ALL_S)
            row["target"] += f" (cp only, then all {PARTITION_ALL_S}s)"
            for net, ip in [*agent["extra_networks"], (self.state["data_network"], agent["ip"])]:
                docker("network", "connect", "--ip", ip, net, agent["name"], check=False)
        else:
            docker("start", agent["name"], check=False)
        return t0, target

    def fault_leader(self, fault, row):
        """4: the leading control plane SIGKILLed; 5: frozen (docker pause) for the lease
        + 5 s. Then it starts (or wakes) again."""
        lease = harness.leader(self.state)
        old = lease[0] or self.container("control-plane")
        row["target"] = old["hostname"] + ("" if lease[0] else " (no lease: not the leader)")
        t0 = time.monotonic()
        if fault == 4:
            docker("kill", "--signal", "KILL", old["name"], check=False)
        else:
            docker("pause", old["name"], check=False)
        say(f"fault {fault} ({FAULTS[fault]}) on {row['target']}")
        # Fault 5 ends on a timer of its own: the polls below may block on the frozen leader.
        unpaused = threading.Event()
        if fault == 5:
            def unpause():
                docker("unpause", old["name"], check=False)
                unpaused.set()
                say(f"unpaused {old['hostname']} after {time.monotonic() - t0:.1f} s")

            threading.Timer(max(0.0, t0 + self.args.lease_s + 5 - time.monotonic()), unpause).start()
        else:
            unpaused.set()
        while time.monotonic() < t0 + DETECT_MAX:
            lead, lrow = harness.leader(self.state)
            row["detect_source"] = "lease table" if lrow is not None else "no lease table yet"
            if lead and lead["name"] != old["name"]:
                row["detect"] = time.monotonic() - t0
                break
            time.sleep(POLL)
        self.recover_from(row, None, t0 + (row["detect"] or 0), t0)
        say(f"fault {fault}: failover {fmt(row['detect'])} s ({row['detect_source']}), recover {fmt(row['recover'])} s")
        if not unpaused.wait(self.args.lease_s + 10):
            docker("unpause", old["name"], check=False)
        if fault == 4:
            docker("start", old["name"], check=False)
        return t0

    def service_answers(self, svc):
        if svc["role"] == "postgres":
            return harness.psql(self.state, "select 1 as one", timeout=5) is not None
        p = docker("exec", svc["name"], "redis-cli", "-a", self.state["password"], "--no-auth-warning", "ping",
                   check=False, timeout=10)
        return p.stdout.strip() == "PONG"

    def fault_service(self, fault, row):
        """6: PostgreSQL, 7: Redis restarted (docker restart: SIGTERM, up to 10 s, start).
        detect: until it answers again; recover: until the control plane answers every
        API's status at full replicas again."""
        svc = self.container("postgres" if fault == 6 else "redis")
        row["target"] = svc["name"].rsplit("-", 1)[-1]
        t0 = time.monotonic()
        say(f"fault {fault} ({FAULTS[fault]}) on {row['target']}")
        docker("restart", "-t", "10", svc["name"], check=False, timeout=120)
        row["detect_source"] = "answers again"
        if self.wait(lambda: self.service_answers(svc), DETECT_MAX, poll=POLL):
            row["detect"] = time.monotonic() - t0
        self.recover_from(row, None, t0, t0)
        say(f"fault {fault}: {row['target']} back after {fmt(row['detect'])} s, APIs answer after {fmt(row['recover'])} s")
        return t0

    def edge_ready(self, edge, path="/readyz"):
        url = next(u for u in self.state["edges"] if f"//{edge['ip']}:" in u)
        a = client.Edges([url]).request("GET", path, timeout=3)
        return a.kind == "ok"

    def fault_edge(self, row):
        """8: an edge SIGKILLed; EDGE_DOWN_S later the same container (same name, so the
        same edge id) starts again and picks up its unflushed usage from Redis. recover:
        until it is ready again."""
        edge = self.container("edge")
        row["target"] = edge["hostname"]
        t0 = time.monotonic()
        docker("kill", "--signal", "KILL", edge["name"], check=False)
        say(f"fault 8 ({FAULTS[8]}) on {row['target']}")
        time.sleep(EDGE_DOWN_S)
        docker("start", edge["name"], check=False)
        row["detect_source"] = "restarted"
        if self.wait(lambda: self.edge_ready(edge), RECOVER_MAX, poll=POLL):
            row["recover"] = time.monotonic() - t0
        say(f"fault 8: {row['target']} ready again {fmt(row['recover'])} s after the kill")
        return t0

    def restart_from(self, c, image, old_image):
        """One workload stopped with its grace and started again from `image` with the
        same spec (name, addresses, networks), then waited for by its probes."""
        say(f"fault 9: stopping {c['hostname']} at {time.strftime('%H:%M:%S', time.gmtime())}Z")
        docker("stop", "-t", str(int(c["grace_s"])), c["name"], check=False, timeout=int(c["grace_s"]) + 60)
        # Its log outlives it, for evidence: <cluster root>/logs/<name>.<n>.log.
        logs = pathlib.Path(self.state["root"]) / "logs"
        logs.mkdir(exist_ok=True)
        n = len(list(logs.glob(f"{c['name']}.*.log")))
        out = docker("logs", c["name"], check=False, timeout=60)
        (logs / f"{c['name']}.{n}.log").write_text(out.stdout + out.stderr)
        docker("rm", "-f", c["name"], check=False)
        c["create_args"] = [image if a == old_image else a for a in c["create_args"]]
        create_and_start(c["create_args"], c["name"], c["extra_networks"])
        harness.save_state(self.args.state, self.state)
        pod = Pod(c["pod_name"], "", "", {}, {}, c["ip"], c["node"])
        wait_ready([(pod, c["spec"], c["name"])], say)

    def admin(self, node, action):
        """POST /api/v1/admin/nodes/<node>/<action> (cordon, drain, uncordon) with the
        admin token; the answer's kind is "ok" on 2xx."""
        a = self.edges.request("POST", f"/api/v1/admin/nodes/{node}/{action}", token=self.state["admin_token"], timeout=10)
        if a.kind != "ok":
            raise RuntimeError(f"{action} {node}: {a}")

    def fault_upgrade(self, row):
        """9: every workload restarted one at a time on a new tag of the same image:
        control planes (the leader last), edges, agents; between agents, until the node
        is up and every API is at full replicas. recover: the whole rollout."""
        old = self.state["image"]
        # Tags of the image `up` made (a second upgrade replaces the first one's tag).
        base = self.state.setdefault("base_image", old)
        new = f"{base}-up{int(time.time()) % 100000}"
        docker("tag", old, new)
        self.state["upgraded_image"] = new
        harness.save_state(self.args.state, self.state)
        lead = harness.leader(self.state)[0]
        cps = [c for c in self.state["containers"] if c["role"] == "control-plane"]
        cps.sort(key=lambda c: lead is not None and c["name"] == lead["name"])
        order = cps + [c for c in self.state["containers"] if c["role"] == "edge"] + list(self.agents.values())
        row["target"] = f"{len(order)} workloads to {new.rsplit(':', 1)[1]}"
        t0 = time.monotonic()
        say(f"fault 9 ({FAULTS[9]}): {row['target']}")
        done = 0
        for c in order:
            drain = c["role"] == "agent" and self.args.upgrade_drain
            if drain:
                # An operator's careful way: move the node's instances off it first.
                self.admin(c["node"], "drain")
                if not self.wait(lambda: self.full(c["node"], empty=True), SETTLE_MAX, poll=POLL):
                    row["note"] = f"{c['node']} did not drain within {SETTLE_MAX} s"
                    break
            self.restart_from(c, new, old)
            if c["role"] == "agent":
                ok = self.wait(lambda: self.node_state(c["node"])[0] == "up" and self.full(None), SETTLE_MAX, poll=POLL)
                if ok and drain:
                    self.admin(c["node"], "uncordon")
            elif c["role"] == "edge":
                ok = self.wait(lambda: self.edge_ready(c), READY_MAX, poll=POLL)
            else:
                ok = True
            if not ok:
                row["note"] = f"{c['hostname']} not back within its bound"
                break
            done += 1
            say(f"fault 9: {c['hostname']} on {new} ({done}/{len(order)}) after {time.monotonic() - t0:.0f} s "
                f"at {time.strftime('%H:%M:%S', time.gmtime())}Z")
        if done == len(order):
            self.state["image"] = new
            harness.save_state(self.args.state, self.state)
            if old != base:
                docker("rmi", old, check=False)
            row["recover"] = time.monotonic() - t0
        row["detect_source"] = "rollout"
        return t0

    def judge(self, fault, row):
        c, x = row["calls"], row["execs"]
        miss = []
        if c.get("lost", 0) or x.get("lost", 0):
            miss.append(f"{c.get('lost', 0)} calls and {x.get('lost', 0)} executes without an answer")
        ok, lb = c.get("ok", 0), c.get("lb502", 0)
        if fault == 8:
            # A call the killed edge had run but not answered may or may not be metered.
            if row["metered"] is None or not ok <= row["metered"] <= ok + lb:
                miss.append(f"metered {row['metered']} not within {ok} answered 2xx .. + {lb} lb 502")
        elif row["metered"] != ok:
            miss.append(f"metered {row['metered']} != {ok} answered 2xx")
        if fault == 9 and c.get("sent", 0) != ok:
            miss.append(f"{c.get('sent', 0) - ok} calls not answered 2xx during the rolling upgrade")
        if row["doubles"]:
            miss.append(f"{row['doubles']} double placements")
        if row["orphans"]:
            miss.append(f"{row['orphans']} orphans")
        if row.get("note"):
            miss.append(row["note"])
        if not self.args.short and fault in TIMED:
            limit = DETECT_TARGET if fault in (1, 2, 3) else FAILOVER_TARGET
            if row["detect"] is None or row["detect"] > limit:
                miss.append(f"detect {fmt(row['detect'])} s > {limit} s")
            if row["recover"] is None or row["recover"] > RECOVER_TARGET:
                miss.append(f"recover {fmt(row['recover'])} s > {RECOVER_TARGET} s after detect")
        elif (fault in TIMED and row["detect"] is None) or row["recover"] is None:
            # Times not judged (--short, or no target for this fault), but a fault never
            # detected or never recovered from within the bounds is still a miss.
            miss.append(f"detect {fmt(row['detect'])} / recover {fmt(row['recover'])} within {DETECT_MAX}/{RECOVER_MAX} s")
        row["missed"] = miss
        self.misses += [f"fault {row['fault']}: {m}" for m in miss]


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


LEGEND = """\
sent: calls sent; 2xx: answered 2xx; error: any other HTTP status, or no edge took the
connection; lb 502: sent, then the connection was reset or closed before a whole answer
(a load balancer in front of the edges would answer 502: definite, not "no answer");
no answer: sent, then nothing within the route timeout + 5 s; metered: the consumer's
metered calls over the fault (must equal 2xx; fault 8: between 2xx and 2xx + lb 502,
since a call the killed edge ran but did not answer may be metered); double: serving
copies beyond the replicas, worst from settling to 60 s; orphans: instance containers
with no instance row 60 s after the fault. detect: node down (1-3), new lease holder
(4, 5), service answers again (6, 7); recover: APIs at full replicas off the lost node,
from detect (1-5), from the restart (6, 7); edge ready again (8); whole rollout (9)."""
HEADER = (f"{'fault':20} {'target':38} {'detect s':>8} {'recover s':>9} {'sent':>6} {'2xx':>6} {'error':>6} "
          f"{'lb 502':>6} {'no answer':>9} {'metered':>8} {'double':>6} {'orphans':>7}  execs ok/err/lost")


def print_row(row):
    c, x = row["calls"], row["execs"]
    print(f"{row['fault']:20} {row['target'][:38]:38} {fmt(row['detect']):>8} {fmt(row['recover']):>9} "
          f"{c.get('sent', 0):>6} {c.get('ok', 0):>6} {c.get('error', 0) + c.get('unreachable', 0):>6} "
          f"{c.get('lb502', 0):>6} {c.get('lost', 0):>9} {row['metered'] if row['metered'] is not None else '-':>8} "
          f"{row['doubles']:>6} {row['orphans']:>7}  "
          f"{x.get('ok', 0)}/{x.get('error', 0) + x.get('unreachable', 0) + x.get('lb502', 0)}/{x.get('lost', 0)}",
          flush=True)
    for m in row["missed"]:
        print(f"    missed: {m}", flush=True)
    if row["statuses"]:
        print(f"    errors: {row['statuses']}", flush=True)
    for ex in row["lost_examples"]:
        print(f"    failed: {ex}", flush=True)


def chaos(args):
    state = harness.load_state(args.state)
    faults = [int(f) for f in (args.faults or (SHORT_FAULTS if args.short else ALL_FAULTS)).split(",") if f.strip()]
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise harness.ClusterError(f"--faults: unknown {bad}; known {sorted(FAULTS)}")
    ch = Chaos(state, args)
    ch.setup()
    print(LEGEND, flush=True)
    print(HEADER, flush=True)
    last = None
    for f in faults:
        node = ch.run_fault(f, last)
        last = node or last
    print(json.dumps({"rows": ch.rows}, default=str), file=sys.stderr)
    if ch.misses:
        print(f"chaos: {len(ch.misses)} target(s) missed", flush=True)
        return 1
    print("chaos: every target met" + (" (--short: times not judged)" if args.short else ""), flush=True)
    return 0
