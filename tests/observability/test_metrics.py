"""Known traffic through `souq up`, counted by a real prometheus scraping the edge's
/metrics: N calls to an API, M executes and K refusals (calls over a plan of one call a
minute: the edge's rate limiter, reason rate_limit) must move the counters by exactly
that much, compared with a baseline taken before the traffic, after a fresh scrape."""
import time

N_CALLS, M_EXECUTES, K_REFUSALS = 7, 3, 4


def _counters(prom, slug):
    q = {
        "calls": f'souq_edge_api_calls_total{{api="{slug}"}}',
        "calls_2xx": f'souq_edge_api_calls_total{{api="{slug}",status_class="2xx"}}',
        "call_durations": f'souq_edge_api_call_duration_seconds_count{{api="{slug}"}}',
        "executes": "souq_agent_executes_total",
        "executes_ok": 'souq_agent_executes_total{outcome="ok"}',
        "refusals": "souq_edge_refusals_total",
        "refusals_rate_limit": 'souq_edge_refusals_total{reason="rate_limit"}',
    }
    return {k: prom.scalar(v) for k, v in q.items()}, q


def test_prometheus_counts(prom, market, say):
    slug = market.calls["slug"]
    prom.wait("prometheus scraping souq", lambda: prom.query('up{job="souq"} == 1'))
    # Every series the rules need must be exposed (a renamed metric would leave an alert blind).
    for name in ("souq_control_plane_nodes", "souq_control_plane_leader", "souq_control_plane_mail_outbox_oldest_age_seconds",
                 "souq_edge_metering_backlog", "souq_agent_admission_queue_depth", "souq_agent_admission_queue_capacity"):
        prom.wait(f"the series {name}", lambda n=name: prom.query(n))
    prom.wait_scraped_after(time.time())
    before, queries = _counters(prom, slug)
    say(f"baseline: {before}")

    # Refusals first: the plan's one call a minute was used by the set-up just now.
    for i in range(K_REFUSALS):
        r = market.limited_call()
        assert r.status == 429, f"refusal {i}: expected 429, got {r}"
        assert (r.json() or {}).get("type", "").endswith("rate-limited"), f"refusal {i}: not rate-limited: {r}"
    for i in range(N_CALLS):
        r = market.call(path=f"ping?n={i}")
        assert r.status == 200, f"call {i}: {r}"
    for i in range(M_EXECUTES):
        r = market.execute()
        body = r.json() or {}
        assert r.status == 200 and body.get("stdout") == "42\n", f"execute {i}: {r}"
    ended = time.time()

    want = {"calls": N_CALLS, "calls_2xx": N_CALLS, "call_durations": N_CALLS, "executes": M_EXECUTES,
            "executes_ok": M_EXECUTES, "refusals": K_REFUSALS, "refusals_rate_limit": K_REFUSALS}
    # A scrape that started a moment after the last answer; counters recorded a little
    # after an answer leaves get a few more scrapes to show.
    prom.wait_scraped_after(ended + 0.5)
    deadline = time.monotonic() + 10
    while True:
        after, _ = _counters(prom, slug)
        delta = {k: after[k] - before[k] for k in want}
        over = {k: (delta[k], want[k]) for k in want if delta[k] > want[k]}
        assert not over, f"counted more than sent (delta, sent): {over}\nqueries: {queries}"
        if delta == {k: float(v) for k, v in want.items()} or time.monotonic() > deadline:
            break
        time.sleep(1)
    short = {k: (delta[k], want[k]) for k in want if delta[k] != want[k]}
    assert not short, f"counters off (delta, sent): {short}\nbefore {before}\nafter {after}\nqueries: {queries}"
    say(f"deltas as sent: {delta}")
    # The histogram's buckets agree with its count.
    inf = prom.scalar(f'souq_edge_api_call_duration_seconds_bucket{{api="{slug}",le="+Inf"}}')
    assert inf == after["call_durations"], f"+Inf bucket {inf} != count {after['call_durations']}"


def test_rules_load(prom, say):
    """The alert rules load into the real prometheus and evaluate without error on live data."""
    def evaluated():
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        # Never evaluated: lastEvaluation is Go's zero time, 0001-01-01T00:00:00Z.
        return rules if rules and not any(r.get("lastEvaluation", "0001").startswith("0001") for r in rules) else None
    rules = prom.wait("every rule evaluated", evaluated)
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not bad, f"rules that fail on live data: {bad}"
    assert len(rules) == 6, f"expected 6 rules, got {[r['name'] for r in rules]}"
    firing = [(r["name"], r["state"]) for r in rules if r.get("state") == "firing"]
    assert not firing, f"alerts firing on a healthy `souq up`: {firing}"
    say(f"{len(rules)} rules evaluated, health ok, none firing")
