"""HTTP to `souq up`'s edge and the marketplace set-up the observability tests share: a
provider and a consumer signed up and verified from the .eml files the control plane
writes (tests/cluster/client.py's verify_link), two deployed Python APIs, one of them
with a plan of one call a minute that the consumer subscribes to with a key."""
import http.client
import json
import pathlib
import secrets
import sys
import time
import urllib.parse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "cluster"))
import client  # noqa: E402  (tests/cluster/client.py)

HANDLER = """def handler(event):
    return {"api": "obs", "path": event["path"]}
"""
DEPLOY_WITHIN = 180


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"Reply({self.status}, {self.headers.get('content-type')}, {self.body[:300]!r})"


class Edge:
    def __init__(self, url):
        p = urllib.parse.urlsplit(url)
        self.host, self.port = p.hostname, p.port or 80

    def request(self, method, path, body=None, token=None, key=None, headers=None, timeout=35):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json"} if data is not None else {}
        if token:
            hdrs["authorization"] = f"Bearer {token}"
        if key:
            hdrs["x-api-key"] = key
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode(errors="replace"))
        finally:
            conn.close()

    def expect(self, status, method, path, **kw):
        r = self.request(method, path, **kw)
        if r.status != status:
            raise AssertionError(f"{method} {path}: expected {status}, got {r}")
        return r.json()


def traceparent():
    """A fresh client traceparent: (header, trace id, parent span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def user(edge, mail_dir, tag):
    """A verified account's access token."""
    addr = f"obs-{tag}-{secrets.token_hex(4)}@example.com"
    pw = "a long enough observability password"
    edge.expect(202, "POST", "/api/v1/auth/signup", body={"email": addr, "password": pw})
    link = client.verify_link(mail_dir, addr)
    edge.expect(200, "GET", link)
    return edge.expect(200, "POST", "/api/v1/auth/login", body={"email": addr, "password": pw})["access_token"]


def wait(what, predicate, within):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {within} s (last: {last!r})")


class Market:
    """`calls`: the provider's API (slug, id) it calls itself (no plan limits);
    `limited`: the API with a plan of one call a minute; `consumer_key` subscribes to it."""

    def __init__(self, edge, mail_dir):
        self.edge = edge
        self.provider = user(edge, mail_dir, "provider")
        self.consumer = user(edge, mail_dir, "consumer")
        self.calls = self._api("obs calls")
        self.limited = self._api("obs limited")
        e, tok = edge, self.provider
        e.expect(201, "POST", f"/api/v1/apis/{self.limited['id']}/plans", token=tok,
                 body={"name": "tight", "price_minor": 0, "currency": "SAR", "monthly_quota": 1000,
                       "rate_limit_per_minute": 1})
        e.expect(200, "PATCH", f"/api/v1/apis/{self.limited['id']}", token=tok, body={"public": True})
        for api in (self.calls, self.limited):
            e.expect(202, "POST", f"/api/v1/apis/{api['id']}/deploy", token=tok, body={"replicas": 1})
        for api in (self.calls, self.limited):
            wait(f"API {api['slug']} running", lambda a=api: self._running(a), DEPLOY_WITHIN)
        # The provider's own calls: the first may reach the route table a moment late.
        self._first_ok("the provider's call", self.call)
        e.expect(201, "POST", f"/api/v1/marketplace/{self.limited['slug']}/subscribe", token=self.consumer,
                 body={"plan": "tight"})
        self.consumer_key = e.expect(201, "POST", "/api/v1/keys", token=self.consumer, body={"name": "obs"})["key"]
        # The one call the plan allows this minute; until the edge learns the key and the
        # subscription it answers 401/403.
        self._first_ok("the consumer's first call", self.limited_call)

    @staticmethod
    def _first_ok(what, send):
        def ok():
            r = send()
            return True if r.status == 200 else r
        wait(what, ok, 60)

    def _api(self, name):
        body = self.edge.expect(201, "POST", "/api/v1/apis", token=self.provider,
                                body={"name": f"{name} {secrets.token_hex(3)}", "runtime": "python", "code": HANDLER})
        return {"id": body["id"], "slug": body["slug"]}

    def _running(self, api):
        r = self.edge.request("GET", f"/api/v1/apis/{api['id']}/status", token=self.provider, timeout=10)
        st = r.json() if r.status == 200 else None
        if not isinstance(st, dict):
            return r
        up = [x for x in st.get("replicas") or [] if x.get("state") == "running"]
        return True if st.get("state") == "running" and up else st

    def call(self, headers=None, path="ping"):
        return self.edge.request("GET", f"/call/{self.calls['slug']}/{path}", token=self.provider, headers=headers)

    def limited_call(self, headers=None):
        return self.edge.request("GET", f"/call/{self.limited['slug']}/ping", key=self.consumer_key, headers=headers)

    def execute(self, headers=None):
        return self.edge.request("POST", "/api/v1/execute", token=self.consumer, headers=headers,
                                 body={"runtime": "python", "code": "print(6 * 7)"}, timeout=60)
