#!/usr/bin/env python3
"""Probe of the runtime shims' `serve` mode: plays the agent's side against real sandboxes.

    python3 scripts/serve-probe.py [--no-bench] [RUNTIME[=IMAGE] ...]

RUNTIME is python, node or go (all three by default); IMAGE defaults to the tag that
`build.sh --print-tags` names. For each runtime it binds a Unix socket in a fresh directory
under /tmp, starts `IMAGE serve /run/souq/shim.sock` with the agent's sandbox profile
(node-agent/src/sandbox/profile.rs) and that directory mounted read-only, accepts the shim's
connection, loads a handler and checks the answers: JSON, shaped responses, text, errors,
load failures, 1000 pipelined requests, the handler's output in `docker logs`, the exit
statuses. Then it measures round trips (p50/p99 of 2000 sequential requests) and pipelined
throughput (20000 requests, 64 in flight). Exits 1 if any check failed.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SECCOMP = os.path.normpath(os.path.join(HERE, "..", "deploy", "seccomp", "sandbox.json"))
LIMIT = 1 << 20
FAILURES = []


def profile(runtime):
    """The container profile of node-agent/src/sandbox/profile.rs (Limits::default())."""
    exec_ = "exec" if runtime == "go" else "noexec"
    return ["--read-only", "--tmpfs", f"/tmp:rw,{exec_},nosuid,nodev,size=64m,mode=1777",
            "--user", "65534:65534", "--network", "none", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--security-opt", f"seccomp={SECCOMP}",
            "--pids-limit", "50", "--memory", "256m", "--memory-swap", "256m", "--cpus", "0.5",
            "--ulimit", "nofile=256:256", "--ulimit", f"fsize={64 << 20}:{64 << 20}",
            "--init", "-w", "/tmp", "--label", "souq.probe=serve"]


def check(cond, what, detail=""):
    print(("  ok    " if cond else "  FAIL  ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


class Instance:
    """One sandbox in serve mode and the agent's end of its socket."""

    def __init__(self, runtime, image, rm=True):
        self.dir = tempfile.mkdtemp(prefix="souq-probe-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        path = os.path.join(self.dir, "shim.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        os.chmod(path, 0o666)
        self.srv.listen(1)
        self.buf = bytearray()
        self.t0 = time.monotonic()
        self.cid = subprocess.check_output(
            ["docker", "run", "-d", *(["--rm"] if rm else []), *profile(runtime),
             "-v", f"{self.dir}:/run/souq:ro", image, "serve", "/run/souq/shim.sock"]).decode().strip()
        self.srv.settimeout(60)
        self.sock, _ = self.srv.accept()
        self.sock.settimeout(60)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("the shim closed the socket")
        self.buf += data

    def frame(self):
        """(header, body) of the next frame the shim sends."""
        while b"\n" not in self.buf:
            self._fill()
        nl = self.buf.index(b"\n")
        hdr = json.loads(self.buf[:nl])
        n = hdr.get("len", hdr.get("error_len", 0))
        while len(self.buf) < nl + 1 + n:
            self._fill()
        body = bytes(self.buf[nl + 1:nl + 1 + n])
        del self.buf[:nl + 1 + n]
        return hdr, body

    def buffered_frame(self):
        """True if a whole frame is already buffered."""
        nl = self.buf.find(b"\n")
        if nl < 0:
            return False
        hdr = json.loads(self.buf[:nl])
        return len(self.buf) >= nl + 1 + hdr.get("len", hdr.get("error_len", 0))

    def load(self, code, limit=LIMIT):
        code = code.encode()
        self.send(json.dumps({"v": 1, "op": "load", "code_len": len(code), "output_limit": limit}).encode() + b"\n" + code)
        hdr, body = self.frame()
        self.ready_s = time.monotonic() - self.t0
        return hdr, body.decode("utf-8", "replace")

    def eof(self):
        """True if the shim closed the socket (and sent nothing more)."""
        try:
            return not self.buf and not self.sock.recv(1)
        except socket.timeout:
            return False

    def logs(self):
        r = subprocess.run(["docker", "logs", self.cid], capture_output=True)
        return r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")

    def wait(self):
        return int(subprocess.check_output(["docker", "wait", self.cid]).decode().strip())

    def close(self):
        subprocess.run(["docker", "rm", "-f", self.cid], capture_output=True)
        self.sock.close()
        self.srv.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def event(path, body="", query=None, i=0):
    return {"method": "POST", "path": path, "query": query or {"i": str(i)},
            "headers": {"content-type": "application/json", "x-probe": "yes"},
            "body": body, "isBase64Encoded": False}


def request(i, ev):
    data = json.dumps(ev, separators=(",", ":")).encode()
    return b'{"id":%d,"len":%d}\n' % (i, len(data)) + data


def call(inst, path, body="", i=1):
    inst.send(request(i, event(path, body)))
    hdr, data = inst.frame()
    assert hdr["id"] == i, hdr
    return hdr["type"], data.decode("utf-8", "replace")


HANDLERS = {
    "python": '''import os, sys
print("probe: loading handler")

def handler(event):
    p = event["path"]
    if p in ("/echo", "/ping"):
        return {k: event.get(k) for k in ("method", "path", "query", "headers", "body", "isBase64Encoded")}
    if p == "/shaped":
        return {"statusCode": 201, "headers": {"content-type": "text/plain"}, "body": "created"}
    if p == "/text":
        return {1, 2, 3}
    if p == "/bytes":
        return b"caf\\xc3\\xa9 \\xff"
    if p == "/none":
        return None
    if p == "/raise":
        raise ValueError("bad input")
    if p == "/exit":
        sys.exit(3)
    if p == "/print":
        print("probe-print", event["body"])
        return "printed"
    if p == "/big":
        return "x" * (2 << 20)
    if p == "/env":
        return dict(os.environ)
    if p == "/unicode":
        return {"s": "h\\u00e9llo \\u2603"}
    raise KeyError(p)
''',
    "node": '''console.log('probe: loading handler');
const os = require('os');
exports.handler = async (event) => {
  switch (event.path) {
    case '/echo': case '/ping': {
      const { method, path, query, headers, body, isBase64Encoded } = event;
      return { method, path, query, headers, body, isBase64Encoded };
    }
    case '/shaped': return { statusCode: 201, headers: { 'content-type': 'text/plain' }, body: 'created' };
    case '/text': return 12345678901234567890n;
    case '/none': return undefined;
    case '/raise': throw new TypeError('bad input');
    case '/throw-string': throw 'plain string';
    case '/uncaught': return new Promise(() => { setTimeout(() => { throw new RangeError('from a timer'); }, 1); });
    case '/print': console.log('probe-print', event.body); return 'printed';
    case '/big': return 'x'.repeat(2 << 20);
    case '/env': return process.env;
    case '/require': return os.platform();
    case '/unicode': return { s: 'h\\u00e9llo \\u2603' };
    default: throw new Error(`no route ${event.path}`);
  }
};
''',
    "go": '''package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

func init() { fmt.Println("probe: loading handler") }

func Handler(event map[string]any) (any, error) {
	switch event["path"] {
	case "/echo", "/ping":
		out := map[string]any{}
		for _, k := range []string{"method", "path", "query", "headers", "body", "isBase64Encoded"} {
			out[k] = event[k]
		}
		return out, nil
	case "/shaped":
		return map[string]any{"statusCode": 201, "headers": map[string]string{"content-type": "text/plain"}, "body": "created"}, nil
	case "/text":
		return complex(1, 2), nil
	case "/none":
		return nil, nil
	case "/raise":
		return nil, errors.New("bad input")
	case "/panic":
		panic("boom")
	case "/nilmap":
		var m map[string]int
		m["x"] = 1
	case "/print":
		fmt.Println("probe-print", event["body"])
		return "printed", nil
	case "/big":
		return strings.Repeat("x", 2<<20), nil
	case "/env":
		return os.Environ(), nil
	case "/unicode":
		return map[string]string{"s": "h\\u00e9llo \\u2603"}, nil
	}
	return nil, fmt.Errorf("no route %v", event["path"])
}
''',
}

# (what, code, phrases the error text must contain)
BAD = {
    "python": [
        ("syntax error", "def handler(event)\n    return 1\n", ["handler.py", "line 1", "SyntaxError"]),
        ("missing handler", "def handle(event):\n    return 1\n", ["handler.py", "handler(event)"]),
        ("import error", "import no_such_module\n", ["handler.py", "line 1", "ModuleNotFoundError", "no_such_module"]),
        ("exception at import", "x = 1\ny = x / 0\n", ["handler.py", "line 2", "ZeroDivisionError", "y = x / 0"]),
        ("handler not callable", "handler = 3\n", ["handler.py", "handler is not a function"]),
    ],
    "node": [
        ("syntax error", "exports.handler = async (event) => {\n  return 1 +;\n};\n", ["handler.js", "SyntaxError"]),
        ("missing handler", "exports.handle = () => 1;\n", ["handler.js", "does not export a function handler"]),
        ("require error", "require('no-such-module');\n", ["handler.js", "Cannot find module 'no-such-module'"]),
        ("throw at load", "throw new Error('at load');\n", ["handler.js:1", "Error: at load"]),
    ],
    "go": [
        ("compile error", "package main\n\nfunc Handler(event map[string]any) (any, error) {\n\treturn x, nil\n}\n",
         ["handler.go:4:9: undefined: x"]),
        ("missing Handler", "package main\n\nfunc Handle(event map[string]any) (any, error) { return nil, nil }\n",
         ["undefined: Handler", "func Handler(event map[string]any) (any, error)"]),
        ("wrong signature", "package main\n\nfunc Handler(event map[string]any) string { return \"\" }\n",
         ["cannot use Handler", "func Handler(event map[string]any) (any, error)"]),
        ("not package main", "package handler\n\nfunc Handler(event map[string]any) (any, error) { return nil, nil }\n",
         ["handler.go:1:9", "package main"]),
        ("syntax error", "package main\n\nfunc Handler(event map[string]any) (any, error) {\n\treturn nil, nil\n",
         ["handler.go:5:1: syntax error"]),
    ],
}

# path -> (type, check of the body); per runtime where they differ
EXPECT = {
    "/shaped": ("json", lambda b: json.loads(b) == {"statusCode": 201, "headers": {"content-type": "text/plain"}, "body": "created"}),
    "/none": ("json", lambda b: b == "null"),
    "/unicode": ("json", lambda b: json.loads(b) == {"s": "h\u00e9llo \u2603"}),
    "/print": ("json", lambda b: b == '"printed"'),
    "/big": ("error", lambda b: b == f"the handler's answer is {(2 << 20) + 2} bytes, over the limit of {LIMIT} bytes"),
    "/env": ("json", lambda b: env_ok(json.loads(b))),
}
EXPECT_BY_RUNTIME = {
    "python": {
        "/text": ("text", lambda b: b == "{1, 2, 3}"),
        "/bytes": ("text", lambda b: b == "caf\u00e9 \ufffd"),
        "/raise": ("error", lambda b: b == "ValueError: bad input"),
        "/exit": ("error", lambda b: b == "SystemExit: 3"),
    },
    "node": {
        "/text": ("text", lambda b: b == "12345678901234567890"),
        "/raise": ("error", lambda b: b == "TypeError: bad input"),
        "/throw-string": ("error", lambda b: b == "plain string"),
        "/uncaught": ("error", lambda b: b == "RangeError: from a timer"),
        "/require": ("json", lambda b: b == '"linux"'),
    },
    "go": {
        "/text": ("text", lambda b: b == "(1+2i)"),
        "/raise": ("error", lambda b: b == "bad input"),
        "/panic": ("error", lambda b: b == "panic: boom"),
        "/nilmap": ("error", lambda b: b == "panic: assignment to entry in nil map"),
    },
}


def env_ok(env):
    if isinstance(env, list):  # Go: os.Environ()
        env = dict(kv.split("=", 1) for kv in env)
    return sorted(env) == ["HOME", "LANG", "PATH"] and env["HOME"] == "/tmp" and env["LANG"] == "C.UTF-8"


def probe_handler(runtime, image):
    inst = Instance(runtime, image)
    try:
        hdr, _ = inst.load(HANDLERS[runtime])
        if not check(hdr == {"ready": True}, f"ready ({inst.ready_s:.2f} s after docker run)", hdr):
            print(inst.logs())
            return None
        typ, body = call(inst, "/echo", '{"a":1}')
        ev = event("/echo", '{"a":1}', i=0)
        check(typ == "json" and json.loads(body) == ev, "echo -> json with the event's fields", (typ, body))
        for path, (want, ok) in {**EXPECT, **EXPECT_BY_RUNTIME[runtime]}.items():
            typ, body = call(inst, path, "marker-" + path)
            check(typ == want and ok(body), f"{path} -> {want}", (typ, body[:300]))
        # Pipelining: 1000 requests in one write, answered in order.
        n = 1000
        inst.send(b"".join(request(1000 + i, event("/echo", str(i), i=i)) for i in range(n)))
        got = [inst.frame() for _ in range(n)]
        ok = all(h["id"] == 1000 + i and h["type"] == "json" and json.loads(b)["body"] == str(i)
                 and json.loads(b)["query"] == {"i": str(i)} for i, (h, b) in enumerate(got))
        check(ok, f"{n} pipelined requests in one write, answered in order")
        time.sleep(0.3)
        logs = inst.logs()
        check("probe: loading handler" in logs, "output at load time in docker logs", logs[-500:])
        check("probe-print marker-/print" in logs, "handler's print() in docker logs", logs[-500:])
        error_logged = {"python": "ValueError: bad input", "node": "TypeError: bad input", "go": "panic: boom"}[runtime]
        check(error_logged in logs and ("Traceback" in logs or "at " in logs or "goroutine" in logs),
              "error's traceback/stack in docker logs", logs[-800:])
        check("souq-shim" not in logs, "no shim complaints in docker logs", logs[-800:])
        return inst
    except Exception:
        inst.close()
        raise


def probe_python_async(image):
    inst = Instance("python", image)
    try:
        hdr, _ = inst.load("import asyncio\nasync def handler(event):\n    await asyncio.sleep(0)\n    return {'async': event['path']}\n")
        typ, body = call(inst, "/a")
        check(hdr == {"ready": True} and typ == "json" and json.loads(body) == {"async": "/a"}, "async def handler", (hdr, typ, body))
    finally:
        inst.close()


def probe_node_sync(image):
    inst = Instance("node", image)
    try:
        hdr, _ = inst.load("module.exports.handler = (e) => ({ sync: true, path: e.path });\n")
        typ, body = call(inst, "/s")
        check(hdr == {"ready": True} and typ == "json" and json.loads(body) == {"sync": True, "path": "/s"},
              "module.exports.handler, sync", (hdr, typ, body))
    finally:
        inst.close()


def probe_bad(runtime, image):
    for what, code, phrases in BAD[runtime]:
        inst = Instance(runtime, image, rm=False)
        try:
            hdr, text = inst.load(code)
            ok = hdr.get("ready") is False and all(p in text for p in phrases) and "/usr/local/lib/souq" not in text \
                and "/tmp/souq/serve" not in text
            check(ok, f"load failure, {what}: ready:false naming {phrases[0]}", (hdr, text))
            check(inst.eof() and inst.wait() == 0, f"load failure, {what}: shim exits 0")
            print("        | " + "\n        | ".join(text.rstrip("\n").split("\n")[:6]))
        finally:
            inst.close()


def probe_exits(runtime, image):
    """Clean EOF -> 0 after answering what was sent; malformed header -> 70."""
    code = {"python": "def handler(e):\n    return 1\n", "node": "exports.handler = () => 1;\n",
            "go": "package main\n\nfunc Handler(e map[string]any) (any, error) { return 1, nil }\n"}[runtime]
    inst = Instance(runtime, image)
    try:
        # The load frame and requests in one write: the shim must not swallow requests.
        raw = code.encode()
        inst.send(json.dumps({"v": 1, "op": "load", "code_len": len(raw), "output_limit": LIMIT}).encode()
                  + b"\n" + raw + b"".join(request(i, event("/x")) for i in range(10)))
        got = [inst.frame() for _ in range(11)]
        check(got[0][0] == {"ready": True} and [h["id"] for h, _ in got[1:]] == list(range(10))
              and all(b == b"1" for _, b in got[1:]), "load frame and 10 requests in one write", got[:3])
    finally:
        inst.close()
    inst = Instance(runtime, image, rm=False)
    try:
        inst.load(code)
        inst.send(request(1, event("/x")) + request(2, event("/y")))
        inst.sock.shutdown(socket.SHUT_WR)
        got = [inst.frame()[0]["id"] for _ in range(2)]
        check(got == [1, 2] and inst.eof() and inst.wait() == 0, "EOF after pipelined requests: all answered, exit 0", got)
    finally:
        inst.close()
    for what, bad in [("not JSON", b"hello\n"), ("negative len", b'{"id":1,"len":-1}\n'),
                      ("missing id", b'{"len":0}\n'), ("header over 4096 bytes", b"{" + b" " * 5000 + b"\n")]:
        inst = Instance(runtime, image, rm=False)
        try:
            inst.load(code)
            inst.send(bad)
            status = inst.wait()
            check(status == 70 and "souq-shim: " in inst.logs(), f"malformed header ({what}): exit 70", status)
        finally:
            inst.close()


def bench(inst, runtime):
    ping = request(0, event("/ping", "x"))[len(b'{"id":0,'):]  # the event, reused; ids vary
    def req(i):
        return b'{"id":%d,' % i + ping
    for i in range(200):  # warm up
        inst.send(req(i))
        inst.frame()
    times = []
    for i in range(2000):
        t = time.perf_counter()
        inst.send(req(i))
        inst.frame()
        times.append(time.perf_counter() - t)
    times.sort()
    p50, p99 = statistics.median(times) * 1e6, times[int(len(times) * 0.99) - 1] * 1e6
    total, window = 20000, 64
    t = time.perf_counter()
    inst.send(b"".join(req(i) for i in range(window)))
    sent, answered = window, 0
    while answered < total:
        hdr, _ = inst.frame()
        assert hdr["id"] == answered, hdr
        answered += 1
        while inst.buffered_frame():
            assert inst.frame()[0]["id"] == answered
            answered += 1
        # Keep 64 in flight: what the answers freed goes out in one write.
        k = min(total - sent, window - (sent - answered))
        if k > 0:
            inst.send(b"".join(req(sent + j) for j in range(k)))
            sent += k
    rps = total / (time.perf_counter() - t)
    print(f"  bench {runtime}: round trip p50 {p50:.0f} us, p99 {p99:.0f} us (2000 sequential); "
          f"pipelined {rps:,.0f} req/s (20000, 64 in flight)", flush=True)
    return p50, p99, rps


def main():
    args = sys.argv[1:]
    do_bench = "--no-bench" not in args
    args = [a for a in args if a != "--no-bench"]
    tags = dict(l.split("=", 1) for l in subprocess.check_output(
        ["bash", os.path.join(HERE, "..", "deploy", "runtimes", "build.sh"), "--print-tags"]).decode().split())
    targets = [(a.split("=", 1) + [None])[:2] for a in args] or [[rt, None] for rt in ("python", "node", "go")]
    results = {}
    for runtime, image in targets:
        image = image or tags[runtime]
        print(f"== {runtime}: {image}", flush=True)
        inst = probe_handler(runtime, image)
        if inst is not None:
            try:
                if do_bench:
                    results[runtime] = bench(inst, runtime)
            finally:
                inst.close()
        if runtime == "python":
            probe_python_async(image)
        if runtime == "node":
            probe_node_sync(image)
        probe_bad(runtime, image)
        probe_exits(runtime, image)
    for runtime, (p50, p99, rps) in results.items():
        print(f"{runtime:7s} p50 {p50:6.0f} us  p99 {p99:6.0f} us  pipelined {rps:9,.0f} req/s")
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed: " + "; ".join(FAILURES))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
