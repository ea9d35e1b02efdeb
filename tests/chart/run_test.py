"""Test 5 of the chart: the rendered chart runs. Renders deploy/helm/souq with test
values, then starts every workload in Docker as Kubernetes would (tests/chart/kubelet.py):
hook Secrets, then the migration Job (must exit 0), then the other Secrets, the
Deployments and the DaemonSet, with Service names as network aliases. PostgreSQL, Redis
and an SMTP sink run as containers built from Debian's packages (tests/chart/services.py).
Once every readiness probe passes, it drives Souq through the edge Service's container:
sign up, verify the address from the mail, log in, an execute in each runtime, an API
deployed with 2 replicas and called. Removes everything it made, also on failure.

    run_test.py ROOT [--image souq/souq:X] [--chart DIR] [--set PATH=YAML ...] [--keep]

--set overrides one value, --chart runs another copy of the chart: both show that a
wrong chart fails (e.g. --set agent.docker.socketPath=/run/none.sock).
Run through scripts/test-chart-run.sh, which provides the pinned Helm SDK.
"""
import argparse
import email
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid

import helm_python as helm
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import services  # noqa: E402
from kubelet import Kubelet, KubeletError, docker  # noqa: E402

RELEASE, NAMESPACE = "rel", "souq"
PASSWORD = "chart-run-secret"
STARTED = time.monotonic()


def say(msg):
    print(f"==> [+{time.monotonic() - STARTED:5.1f}s] {msg}", flush=True)


def values(run_id, agent_dir, image):
    repo, tag = image.rsplit(":", 1)
    return {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
        "publicUrl": f"http://{RELEASE}-souq-edge",
        "secrets": {
            "database": {"url": f"postgres://souq:{PASSWORD}@postgresql:5432/souq", "existingSecret": ""},
            "redis": {"url": f"redis://:{PASSWORD}@redis:6379", "existingSecret": ""},
            "smtp": {"url": "smtp://mail:2525", "existingSecret": ""},
        },
        "edge": {"replicas": 2},
        "agent": {"dataDir": agent_dir, "region": "chart-run"},
    }


def set_value(vals, assignment):
    path, _, raw = assignment.partition("=")
    cur = vals
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = yaml.safe_load(raw)


def render(chart_dir, vals):
    with helm.Chart.load(str(chart_dir)) as chart:
        manifests = chart.render(vals, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objs = []
    for path, text in sorted(manifests.items()):
        if not path.endswith("NOTES.txt"):
            objs += [d for d in yaml.safe_load_all(text) if d]
    return objs


def hook(obj):
    a = (obj.get("metadata") or {}).get("annotations") or {}
    return a.get("helm.sh/hook", ""), int(a.get("helm.sh/hook-weight", "0")), a.get("helm.sh/hook-delete-policy", "")


def install(kube, objs):
    """Helm's install order: pre-install hooks by weight (Jobs run to completion), then
    the release's objects. Returns the workload pods and the Services."""
    pre = sorted((o for o in objs if "pre-install" in hook(o)[0]), key=lambda o: (hook(o)[1], o["kind"] == "Job"))
    done = []
    for o in pre:
        if o["kind"] in ("Secret", "ConfigMap"):
            kube.add_config(o)
            done.append(o)
        elif o["kind"] == "Job":
            run_job(kube, o)
            done.append(o)
        else:
            raise KubeletError(f"pre-install hook of kind {o['kind']} is not supported by the stand-in")
    for o in done:  # hook-succeeded: Helm deletes them before the release's objects exist
        if "hook-succeeded" in hook(o)[2] and o["kind"] != "Job":
            kube.delete_config(o)
    release = [o for o in objs if not hook(o)[0]]
    for o in release:
        if o["kind"] in ("Secret", "ConfigMap"):
            kube.add_config(o)
    pods = []
    for o in release:
        name, spec = o["metadata"]["name"], o.get("spec") or {}
        if o["kind"] == "Deployment":
            pods += [kube.new_pod("Deployment", name, spec["template"], i) for i in range(spec.get("replicas", 1))]
        elif o["kind"] == "DaemonSet":
            pods.append(kube.new_pod("DaemonSet", name, spec["template"], 0))
        elif o["kind"] in ("StatefulSet", "Job", "CronJob", "Pod", "ReplicaSet"):
            raise KubeletError(f"{o['kind']} {name}: not supported by the stand-in")
    services_ = [o for o in release if o["kind"] == "Service"]
    kube.bind_services(services_)
    skipped = sorted({o["kind"] for o in release if o["kind"] not in
                      ("Secret", "ConfigMap", "Deployment", "DaemonSet", "Service")})
    say(f"not simulated (no effect on a single Docker network): {', '.join(skipped)}")
    for p in pods:
        kube.start(p)
        say(f"started {p.kind} pod {p.name} at {p.ip}" + (f" (Service {', '.join(p.aliases)})" if p.aliases else ""))
    return pods, services_


def run_job(kube, job):
    tpl = job["spec"]["template"]
    if tpl["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
        raise KubeletError(f"Job {job['metadata']['name']}: restartPolicy must be Never or OnFailure")
    pod = kube.new_pod("Job", job["metadata"]["name"], tpl)
    pod.spec = {**tpl["spec"], "activeDeadlineSeconds": job["spec"].get("activeDeadlineSeconds", 600)}
    say(f"hook Job {pod.name} (weight {hook(job)[1]}) running")
    p = kube.start(pod, detach=False)
    if p.returncode != 0:
        raise KubeletError(f"Job {pod.name} exited {p.returncode}:\n{(p.stdout + p.stderr)[-3000:]}")
    say(f"hook Job {pod.name} exited 0")


class Edge:
    """HTTP to the edge Service: its port mapped to the targetPort of one edge pod."""

    def __init__(self, base, public_url):
        self.base, self.public_url = base, public_url

    def req(self, method, path, body=None, token=None, timeout=60):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            r.add_header("content-type", "application/json")
        if token:
            r.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


def expect(ok, what):
    if not ok:
        raise KubeletError(f"check failed: {what}")


def user_flow(kube, edge):
    addr = f"chart-run-{uuid.uuid4().hex[:8]}@example.com"
    pw = "a long enough password"
    s, r = edge.req("POST", "/api/v1/auth/signup", {"email": addr, "password": pw})
    expect(s == 202, f"signup: {s} {r}")
    say(f"signed up {addr}")
    link, deadline = None, time.monotonic() + 60
    while link is None and time.monotonic() < deadline:
        for m in services.mails(kube):
            if addr in m["to"]:
                msg = email.message_from_string(m["data"])
                parts = [p for p in msg.walk() if p.get_content_type() == "text/plain"] or [msg]
                text = parts[0].get_payload(decode=True).decode("utf-8", "replace")
                found = re.search(r"https?://\S+?(/api/v1/auth/verify-email/[^\s\"<>]+)", text)
                link = found and found.group(1)
        time.sleep(0.5)
    expect(link, f"a verification mail reached the SMTP sink for {addr}")
    s, r = edge.req("GET", link)
    expect(s == 200, f"verify-email link: {s} {r}")
    s, r = edge.req("POST", "/api/v1/auth/login", {"email": addr, "password": pw})
    expect(s == 200 and "access_token" in r, f"login: {s} {r}")
    token = r["access_token"]
    say("address verified from the mail, logged in")
    runs = {
        "python": ("print('salam from python')", "salam from python\n"),
        "node": ("console.log('salam from node')", "salam from node\n"),
        "go": ('package main\nimport "fmt"\nfunc main() { fmt.Println("salam from go") }', "salam from go\n"),
    }
    for rt, (code, out) in runs.items():
        s, r = edge.req("POST", "/api/v1/execute", {"runtime": rt, "code": code, "timeout_ms": 30000}, token, 120)
        expect(s == 200 and r.get("stdout") == out and r.get("success") is True, f"execute {rt}: {s} {r}")
        say(f"execute {rt}: {r['stdout'].strip()!r} in {r.get('duration_ms')} ms")
    code = "import os\ndef handler(event):\n    return {'path': event['path'], 'host': os.uname().nodename}\n"
    s, r = edge.req("POST", "/api/v1/apis", {"name": "chart run", "runtime": "python", "code": code}, token)
    expect(s == 201, f"create API: {s} {r}")
    api_id, slug = r["id"], r["slug"]
    s, r = edge.req("POST", f"/api/v1/apis/{api_id}/deploy", {"replicas": 2}, token)
    expect(s == 202, f"deploy: {s} {r}")
    deadline, st = time.monotonic() + 180, {}
    while time.monotonic() < deadline:
        _, st = edge.req("GET", f"/api/v1/apis/{api_id}/status", token=token)
        st = st if isinstance(st, dict) else {"answer": st}
        reps = st.get("replicas") or []
        if st.get("state") == "running" and len(reps) == 2 and all(x.get("state") == "running" for x in reps):
            break
        time.sleep(1)
    else:
        raise KubeletError(f"the API did not run 2 replicas within 180 s: {st}")
    say(f"API {slug} running with 2 replicas")
    hosts, deadline = set(), time.monotonic() + 60
    while time.monotonic() < deadline and len(hosts) < 2:
        s, r = edge.req("GET", f"/call/{slug}/hello", token=token)
        if s == 200:
            expect(r.get("path") == "/hello", f"call answer: {r}")
            hosts.add(r["host"])
        else:
            time.sleep(0.2)
    expect(len(hosts) == 2, f"calls reached both replicas: {hosts} (last answer {s} {r})")
    say(f"called {slug}: answers from both replicas ({', '.join(sorted(hosts))})")
    # The edges share rate limits and metering through Redis: a Redis URL that does not
    # reach them (a wrong env name, a wrong key) leaves it empty.
    deadline, keys = time.monotonic() + 30, []
    while not keys and time.monotonic() < deadline:
        keys = services.redis_keys(kube, PASSWORD)
        time.sleep(0.5)
    expect(keys, "the edges wrote their rate limits and metering to Redis")
    say(f"Redis holds the edges' keys: {', '.join(sorted({k.split(':')[0] for k in keys}))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=pathlib.Path)
    ap.add_argument("--image", default=None)
    ap.add_argument("--chart", type=pathlib.Path, default=None, help="the chart (default deploy/helm/souq)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--keep", action="store_true", help="leave the containers for inspection")
    args = ap.parse_args()
    root = args.root.resolve()
    version = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"', (root / "Cargo.toml").read_text(), re.S)[1]
    image = args.image or f"souq/souq:{version}"
    run_id = uuid.uuid4().hex[:8]
    agent_dir = f"/tmp/souq-chartrun-{run_id}-agent"
    kube = Kubelet(run_id, NAMESPACE, f"chartrun-{run_id}-node1", f"10.{random.randint(200, 250)}.{random.randint(0, 255)}", say)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok = False
    try:
        if docker("image", "inspect", image, check=False).returncode != 0:
            raise KubeletError(f"image {image} missing: build it with deploy/image/build.sh")
        vals = values(run_id, agent_dir, image)
        for s in args.set:
            set_value(vals, s)
            say(f"value overridden: {s}")
        chart_dir = args.chart or root / "deploy/helm/souq"
        objs = render(chart_dir, vals)
        say(f"rendered {len(objs)} objects from {chart_dir} with image {image}")
        tags = subprocess.run(["bash", str(root / "deploy/runtimes/build.sh"), "--print-tags"],
                              capture_output=True, text=True, check=True).stdout
        base = dict(line.split("=", 1) for line in tags.split())["python"]
        tag = services.image(base)
        kube.make_network()
        ips = services.start(kube, tag, PASSWORD)
        say(f"PostgreSQL, Redis and the SMTP sink ({tag}) up: {ips}")
        pods, svcs = install(kube, objs)
        kube.wait_ready(pods)
        edge_svc = next(s for s in svcs if s["metadata"]["name"] == f"{RELEASE}-souq-edge")
        port = edge_svc["spec"]["ports"][0]["port"]
        pod, target = kube.service_target(edge_svc, port)
        say(f"edge Service {edge_svc['metadata']['name']}:{port} -> pod {pod.name} {pod.ip}:{target}")
        user_flow(kube, Edge(f"http://{pod.ip}:{target}", vals["publicUrl"]))
        ok = True
    except (KubeletError, subprocess.CalledProcessError, subprocess.TimeoutExpired, helm.HelmError) as e:
        print(f"FAIL: {e}", flush=True)
    except Exception:  # noqa: BLE001 - anything else fails the test too, after the cleanup
        traceback.print_exc()
    finally:
        if args.keep:
            say(f"--keep: containers labelled {kube.label} and network {kube.network} left")
        else:
            n = kube.cleanup()
            # The agent's sandboxes and instances are the Engine's, labelled with its node.
            left = docker("ps", "-aq", "--filter", f"label=souq.node={kube.node}", check=False).stdout.split()
            if left:
                docker("rm", "-f", *left, check=False)
            shutil.rmtree(agent_dir, ignore_errors=True)
            say(f"cleaned up {n} containers, {len(left)} sandboxes/instances, network {kube.network}")
    say("chart run test " + ("passed" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
