#!/usr/bin/env python3
"""Measures whether signup, forgot-password and login answer an existing address and an
unknown one in the same time, against a running edge (default http://127.0.0.1:8080).

    python3 scripts/measure-enumeration.py [EDGE_URL] [ROUNDS]

The two kinds of request alternate, so drift on the machine hits both alike. Login rounds
are capped at 20 per kind so the per-address throttle (50 failures per 15 min) is not hit;
each existing-address login uses a fresh account, so the per-account throttle is not hit
either. Prints median and p90 in ms for each side, and the difference of the medians.
"""
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
import uuid

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
PASSWORD = "measure enumeration pw"


def post(path, body):
    req = urllib.request.Request(BASE + path, json.dumps(body).encode(), {"content-type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    return (time.perf_counter() - start) * 1000, status, data


def fresh():
    return f"m-{uuid.uuid4().hex}@example.com"


def account():
    email = fresh()
    post("/api/v1/auth/signup", {"email": email, "password": PASSWORD})
    return email


def compare(name, rounds, known, unknown):
    a, b = [], []
    for _ in range(rounds):
        ta, sa, da = known()
        tb, sb, db = unknown()
        if (sa, da) != (sb, db):
            print(f"{name}: answers differ: {sa} {da!r} vs {sb} {db!r}")
        a.append(ta)
        b.append(tb)
    def p90(x):
        return sorted(x)[int(len(x) * 0.9) - 1]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name:8} n={rounds:3}  existing p50 {ma:7.2f} ms p90 {p90(a):7.2f}  |  "
          f"unknown p50 {mb:7.2f} ms p90 {p90(b):7.2f}  |  difference {ma - mb:+.2f} ms")


taken = account()
compare("signup", ROUNDS,
        lambda: post("/api/v1/auth/signup", {"email": taken, "password": PASSWORD}),
        lambda: post("/api/v1/auth/signup", {"email": fresh(), "password": PASSWORD}))
compare("forgot", ROUNDS,
        lambda: post("/api/v1/auth/forgot-password", {"email": taken}),
        lambda: post("/api/v1/auth/forgot-password", {"email": fresh()}))
accounts = [account() for _ in range(min(ROUNDS, 20))]
compare("login", len(accounts),
        lambda: post("/api/v1/auth/login", {"email": accounts.pop(), "password": "wrong password!"}),
        lambda: post("/api/v1/auth/login", {"email": fresh(), "password": "wrong password!"}))
