"""The processes the observability tests run: `souq up` and a real prometheus, each in a
temp dir, each stopped (SIGTERM, then SIGKILL) and its dir removed by `stop()`, which is
safe to call more than once and on something that never started."""
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

READY_WITHIN = 300  # `souq up` may first load the runtime images into the Engine.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        text = open(path, errors="replace").read().splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    | " + line for line in text[-lines:])


def _end(proc, grace):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class SouqUp:
    """`souq up` on a free loopback port with an embedded database in a temp data dir,
    exporting traces to `otlp_endpoint`; `url` is the edge's URL once `start()` returns."""

    def __init__(self, binary, otlp_endpoint):
        self.binary, self.otlp_endpoint = binary, otlp_endpoint
        self.dir = tempfile.mkdtemp(prefix="souq-obs-")
        self.data_dir = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "souq.log")
        self.node = f"obs-{os.getpid()}"
        self.proc = None
        self.url = None

    @property
    def mail_dir(self):
        return os.path.join(self.data_dir, "mail")

    def start(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SOUQ_", "OTEL_")) or k in ("SOUQ_LOG", "SOUQ_LOG_FORMAT")}
        env.setdefault("SOUQ_LOG", "info")
        cmd = [self.binary, "up", "--edge-addr", "127.0.0.1:0", "--node-name", self.node, "--data-dir", self.data_dir,
               "--otlp-endpoint", self.otlp_endpoint, "--trace-sample-ratio", "1"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
        lines = queue.Queue()

        def read():
            for line in self.proc.stdout:
                lines.put(line.strip())
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith("edge listening on "):
                self.url = line.removeprefix("edge listening on ").strip()
                return self
        raise RuntimeError(f"`{' '.join(cmd)}` did not say `edge listening on` within {READY_WITHIN} s "
                           f"(exit {self.proc.poll()}):\n{tail(self.log)}")

    def stop(self):
        _end(self.proc, 30)
        # What a killed `souq up` could not remove: the containers of its node.
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=souq.node={self.node}"],
                             capture_output=True, text=True, timeout=60).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)
        return len(ids)


class Prometheus:
    """A prometheus on 127.0.0.1:<free port> scraping `target` (host:port) every second,
    with `rule_file` loaded, its TSDB in a temp dir."""

    def __init__(self, target, rule_file):
        self.dir = tempfile.mkdtemp(prefix="souq-obs-prom-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(self.dir, "prometheus.log")
        self.config = os.path.join(self.dir, "prometheus.yml")
        # JSON is YAML: no YAML library is needed to write it.
        with open(self.config, "w") as f:
            json.dump({
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [rule_file],
                "scrape_configs": [{"job_name": "souq", "metrics_path": "/metrics",
                                    "static_configs": [{"targets": [target]}]}],
            }, f)
        self.proc = None

    def start(self, within=30):
        cmd = ["prometheus", f"--config.file={self.config}", f"--storage.tsdb.path={self.dir}/data",
               f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prometheus was not ready within {within} s (exit {self.proc.poll()}):\n{tail(self.log)}")

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"prometheus {path} {params}: HTTP {e.code}: {e.read()[:500]!r}") from e
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, promql):
        """The instant vector of `promql` now, as [(labels, float)]."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", f"{promql}: a {data['resultType']}, not a vector"
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def scalar(self, promql):
        """The one value of `promql` (wrapped in `sum(...) or vector(0)`: 0 when absent)."""
        got = self.query(f"sum({promql}) or vector(0)")
        assert len(got) == 1, f"{promql}: {got}"
        return got[0][1]

    def wait(self, what, predicate, within=30.0):
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {within:.0f} s (last: {last!r})\n{tail(self.log, 15)}")

    def wait_scraped_after(self, t, within=30.0):
        """Waits for a successful scrape that started after unix time `t`."""
        def fresh():
            # timestamp() of a plain selector: the sample's (scrape's) time; of any other
            # expression, older versions give the evaluation time.
            at = self.query('timestamp(up{job="souq"})')
            up = self.query('up{job="souq"}')
            return bool(at and up and at[0][1] > t and up[0][1] == 1)
        self.wait(f"a successful scrape of souq after {t:.1f}", fresh, within)

    def stop(self):
        _end(self.proc, 10)
        shutil.rmtree(self.dir, ignore_errors=True)
