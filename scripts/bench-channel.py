#!/usr/bin/env python3
"""Round trip of one JSON line between the agent's side and a process in a sandbox, over
the two channels Souq weighed: the container's stdio attached through the Engine API,
and a Unix socket in an agent-owned directory mounted read-only (what the agent uses:
it measured faster; see docs/PERFORMANCE.md).

    python3 scripts/bench-channel.py [ROUND_TRIPS]

Both sandboxes get the full profile (256 MiB, 0.5 CPU, pids 50, no network, read-only
root, cap-drop ALL, no-new-privileges, uid 65534). Prints p50/p99 in µs for each, and
whether the sandbox could remove the socket.
"""
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
here = os.path.dirname(os.path.abspath(__file__))
tags = subprocess.check_output(["bash", os.path.join(here, "..", "deploy", "runtimes", "build.sh"), "--print-tags"])
IMAGE = dict(l.split("=", 1) for l in tags.decode().split())["python"]
PROFILE = ["--init", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,noexec,nosuid,nodev,size=64m",
           "--memory", "256m", "--memory-swap", "256m", "--cpus", "0.5", "--pids-limit", "50",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "65534:65534"]
ECHO_STDIO = "import sys\nfor l in sys.stdin.buffer: sys.stdout.buffer.write(l); sys.stdout.buffer.flush()"
ECHO_SOCKET = """import os, socket
try:
    os.unlink('/chan/s.sock'); print('unlink: allowed', flush=True)
except OSError as e:
    print('unlink:', e.strerror, flush=True)
s = socket.socket(socket.AF_UNIX); s.connect('/chan/s.sock'); f = s.makefile('rwb')
for l in f: f.write(l); f.flush()
"""
LINE = json.dumps({"v": 1, "id": 1, "code_len": 11, "stdin_len": 0}).encode() + b"\n"


class UnixHTTP(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/var/run/docker.sock")


def stats(xs):
    xs = sorted(xs)
    return statistics.median(xs) * 1e6, xs[int(len(xs) * 0.99) - 1] * 1e6


def attach_round_trips():
    cid = subprocess.check_output(["docker", "create", "-i", *PROFILE, "--entrypoint", "python3", IMAGE, "-c", ECHO_STDIO]).decode().strip()
    try:
        conn = UnixHTTP("localhost")
        conn.request("POST", f"/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1",
                     headers={"Upgrade": "tcp", "Connection": "Upgrade"})
        resp = conn.getresponse()
        assert resp.status == 101, resp.status
        sock = conn.sock
        subprocess.check_call(["docker", "start", cid], stdout=subprocess.DEVNULL)
        times = []
        for _ in range(N):
            t = time.perf_counter()
            sock.sendall(LINE)
            got = b""
            while not got.endswith(b"\n"):
                hdr = sock.recv(8, socket.MSG_WAITALL)  # the Engine's stream frame header
                got += sock.recv(int.from_bytes(hdr[4:], "big"), socket.MSG_WAITALL)
            times.append(time.perf_counter() - t)
        return stats(times[10:])
    finally:
        subprocess.call(["docker", "rm", "-f", cid], stdout=subprocess.DEVNULL)


def socket_round_trips():
    d = tempfile.mkdtemp(prefix="souq-chan-")
    os.chmod(d, 0o755)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(os.path.join(d, "s.sock"))
    os.chmod(os.path.join(d, "s.sock"), 0o666)
    srv.listen(1)
    p = subprocess.Popen(["docker", "run", "--rm", *PROFILE, "-v", f"{d}:/chan:ro", "--entrypoint", "python3", IMAGE, "-c", ECHO_SOCKET],
                         stdout=subprocess.PIPE)
    try:
        unlink = p.stdout.readline().decode().strip()
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        times = []
        for _ in range(N):
            t = time.perf_counter()
            f.write(LINE); f.flush()
            f.readline()
            times.append(time.perf_counter() - t)
        return stats(times[10:]), unlink
    finally:
        srv.close(); p.kill(); p.wait()
        subprocess.call(["rm", "-rf", d])


a50, a99 = attach_round_trips()
(s50, s99), unlink = socket_round_trips()
print(f"attached stdio (Engine API): p50 {a50:7.0f} µs  p99 {a99:7.0f} µs  ({N} round trips)")
print(f"Unix socket, dir mounted ro: p50 {s50:7.0f} µs  p99 {s99:7.0f} µs  ({N} round trips; sandbox {unlink})")
