"""Runs the souq binary with the internal TLS material and signing key the chart
generates: a control plane and an edge must complete mutual TLS (the edge's /readyz
answers 200), and a certificate of the wrong role must be refused. Needs SOUQ_BIN."""
import base64
import json
import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

# Generous bounds: a debug build on a loaded 2-core machine.
START_TIMEOUT_S = 60
READY_TIMEOUT_S = 60


def write_secrets(objects, root):
    """Each rendered Secret as a directory of its decoded keys."""
    for _, o in objects:
        if o["kind"] == "Secret":
            d = root / o["metadata"]["name"]
            d.mkdir(parents=True, exist_ok=True)
            for k, v in (o.get("data") or {}).items():
                (d / k).write_bytes(base64.b64decode(v))


def start(args, what):
    """Starts a role on 127.0.0.1:0 and returns (process, the address it logged)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOUQ_")}
    env["SOUQ_LOG"] = "info"
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in p.stderr], daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline and p.poll() is None:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line.strip())
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("message") == f"{what} listening":
            return p, rec["addr"]
    p.kill()
    raise RuntimeError(f"{what} did not start: {' | '.join(seen[-5:])}")


def tls_args(root, secret):
    d = root / secret
    return ["--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"), "--tls-ca", str(d / "ca.crt")]


def check(check_fn, objects, binary, fullname):
    root = pathlib.Path(tempfile.mkdtemp(prefix="souq-chart-tls-"))
    procs = []
    try:
        write_secrets(objects, root)
        token = (root / fullname / "join-token").read_text()
        cp, cp_addr = start([binary, "control-plane", "--grpc-addr", "127.0.0.1:0", "--data-dir", str(root / "cp"),
                             "--public-url", "http://souq.invalid", "--join-token", token,
                             "--signing-key-file", str(root / fullname / "signing-key.pem"),
                             *tls_args(root, f"{fullname}-tls-control-plane")], "control plane")
        procs.append(cp)
        edge, edge_addr = start([binary, "edge", "--edge-addr", "127.0.0.1:0", "--join-token", token,
                                 "--control-plane-url", f"https://{cp_addr}",
                                 *tls_args(root, f"{fullname}-tls-edge")], "edge")
        procs.append(edge)
        deadline, status = time.monotonic() + READY_TIMEOUT_S, None
        while time.monotonic() < deadline and status != 200:
            try:
                status = urllib.request.urlopen(f"http://{edge_addr}/readyz", timeout=5).status
            except OSError:
                time.sleep(0.5)
        check_fn(status == 200, "an edge and a control plane with the chart's certificates did not reach mutual TLS")
        wrong = subprocess.run([binary, "edge", "--edge-addr", "127.0.0.1:0", "--join-token", token,
                                *tls_args(root, f"{fullname}-tls-agent")], capture_output=True, text=True, timeout=30,
                               env={k: v for k, v in os.environ.items() if not k.startswith("SOUQ_")})
        check_fn(wrong.returncode == 64 and "--tls-cert" in wrong.stderr,
                 f"an edge with the agent's certificate was not refused: {wrong.returncode} {wrong.stderr.strip()}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        check_fn(False, str(e))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
