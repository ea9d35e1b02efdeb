"""HTTP to a cluster's edges, as a load balancer in front of them would: each request goes
to the next edge in turn, and a connection refused (or not accepted) before anything was
sent moves it to the other edges. Nothing is retried once the request was sent: a
connection reset or closed before a whole answer is what a load balancer answers 502
for ("lb502", a definite answer); a timeout is an answer lost. Also the account flow of the chaos driver: sign up,
verify from the .eml the control plane wrote, log in."""
import email
import email.policy
import http.client
import itertools
import json
import pathlib
import re
import time
import urllib.parse

# Opening a connection to an edge: a live edge accepts at once.
CONNECT_TIMEOUT = 3
# Most bytes of an answer read.
MAX_BODY = 1 << 20


class Answer:
    """One request's outcome: `kind` is ok (2xx), error (any other HTTP status), lb502 (sent,
    then the connection was reset or closed without a whole answer: a load balancer's
    502), lost (sent, then no answer within the timeout) or unreachable (no edge took the
    connection)."""

    def __init__(self, kind, status=None, body=None, detail=""):
        self.kind, self.status, self.body, self.detail = kind, status, body, detail

    def __repr__(self):
        return f"Answer({self.kind}, {self.status}, {str(self.body)[:200]!r}, {self.detail!r})"


class Edges:
    def __init__(self, urls):
        self.targets = []
        for u in urls:
            p = urllib.parse.urlsplit(u)
            self.targets.append((p.hostname, p.port or 80))
        self.turn = itertools.count()

    def request(self, method, path, body=None, token=None, headers=None, timeout=35.0):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json"} if data is not None else {}
        if token:
            hdrs["authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        start = next(self.turn)
        refused = []
        for i in range(len(self.targets)):
            host, port = self.targets[(start + i) % len(self.targets)]
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
            try:
                conn.connect()
            except OSError as e:  # nothing was sent: another edge may take it
                refused.append(f"{host}: {e}")
                conn.close()
                continue
            try:
                conn.sock.settimeout(timeout)
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read(MAX_BODY)
            except (ConnectionError, http.client.IncompleteRead, http.client.BadStatusLine) as e:
                # RemoteDisconnected is both a ConnectionResetError and a BadStatusLine.
                return Answer("lb502", detail=f"{host}: {type(e).__name__}: {e}")
            except (OSError, http.client.HTTPException) as e:
                return Answer("lost", detail=f"{host}: {type(e).__name__}: {e}")
            finally:
                conn.close()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Answer("ok" if 200 <= resp.status < 300 else "error", resp.status, parsed, detail=host)
        return Answer("unreachable", detail="; ".join(refused))


def verify_link(mail_dir, address, within=60):
    """The verify-email path from the newest .eml to `address` in mail_dir."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for f in sorted(pathlib.Path(mail_dir).glob("*.eml"), key=lambda f: f.stat().st_mtime, reverse=True):
            msg = email.message_from_bytes(f.read_bytes()[:MAX_BODY], policy=email.policy.default)
            if address not in str(msg.get("To", "")):
                continue
            parts = [p for p in msg.walk() if p.get_content_type() == "text/plain"] or [msg]
            text = parts[0].get_content()
            found = re.search(r"https?://\S+?(/api/v1/auth/verify-email/[^\s\"<>]+)", text)
            if found:
                return found.group(1)
        time.sleep(0.5)
    raise RuntimeError(f"no verification mail to {address} in {mail_dir} within {within} s")


def expect(answer, status, what):
    if answer.status != status:
        raise RuntimeError(f"{what}: expected {status}, got {answer}")
    return answer.body


class User:
    """A verified account; `token()` logs in again before the access token (15 min) ends."""

    RELOGIN_AFTER = 600

    def __init__(self, edges, mail_dir, tag):
        self.edges = edges
        self.addr = f"chaos-{tag}-{int(time.time() * 1000) % 10**9}@example.com"
        self.pw = "a long enough chaos password"
        expect(edges.request("POST", "/api/v1/auth/signup", {"email": self.addr, "password": self.pw}), 202,
               f"signup {self.addr}")
        link = verify_link(mail_dir, self.addr)
        expect(edges.request("GET", link), 200, f"verify {self.addr}")
        self._token, self._at = None, 0.0

    def token(self):
        if self._token is None or time.monotonic() - self._at > self.RELOGIN_AFTER:
            body = expect(self.edges.request("POST", "/api/v1/auth/login", {"email": self.addr, "password": self.pw}),
                          200, f"login {self.addr}")
            self._token, self._at = body["access_token"], time.monotonic()
        return self._token
