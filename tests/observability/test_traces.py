"""Traces from `souq up` at a real OTLP/gRPC receiver: one call is one trace across
souq-edge, souq-agent and souq-shim with whole parent links; a client's traceparent is
adopted; an execute runs edge → control plane → agent → shim in one trace; a
problem+json answer names the trace of its spans."""
import time

from api import traceparent

EDGE, CP, AGENT, SHIM = "souq-edge", "souq-control-plane", "souq-agent", "souq-shim"
WITHIN = 30.0


def _links(spans, client_parent=""):
    """[] when the spans form one tree: exactly one root, an edge server span whose parent
    is `client_parent` ('' for none), and every other span's parent in the trace; else
    what is wrong."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_id not in ids]
    if len(roots) != 1:
        return [f"{len(roots)} spans whose parent is not in the trace (one root expected): {roots}"]
    root = roots[0]
    wrong = []
    if (root.service, root.kind) != (EDGE, "server"):
        wrong.append(f"the root is not the edge's server span: {root}")
    if root.parent_id != client_parent:
        wrong.append(f"the root's parent is {root.parent_id or 'none'!r}, not {client_parent or 'none'!r}")
    return wrong


def _complete(services, client_parent=""):
    """A predicate on one trace's spans: every service present and the links whole."""
    def ok(spans):
        return spans if services <= {s.service for s in spans} and not _links(spans, client_parent) else None
    return ok


def _chain(span, by_id):
    """The services from `span` up to the root, repeats folded."""
    out = []
    while span is not None:
        if not out or out[-1] != span.service:
            out.append(span.service)
        span = by_id.get(span.parent_id)
    return out


def _fail(what, spans, receiver):
    raise AssertionError(f"{what}\n{receiver.dump(spans)}")


def _check_call_trace(spans, receiver, client_parent, status=200):
    by_id = {s.span_id: s for s in spans}
    wrong = _links(spans, client_parent)
    root = next((s for s in spans if s.parent_id not in by_id), None)
    agent_servers = [s for s in spans if s.service == AGENT and s.kind == "server"]
    if not agent_servers:
        wrong.append("no server span of souq-agent")
    for s in agent_servers:
        parent = by_id.get(s.parent_id)
        if not parent or parent.service != EDGE:
            wrong.append(f"the agent's server span's parent is not an edge span: {s} <- {parent}")
    shims = [s for s in spans if s.service == SHIM]
    for s in shims:
        parent = by_id.get(s.parent_id)
        if not parent or parent.service != AGENT:
            wrong.append(f"the shim span's parent is not an agent span: {s} <- {parent}")
    if root is not None:
        route = root.attrs.get("http.route")
        if not route or "/call/" not in str(route):
            wrong.append(f"the edge's server span has no call route (http.route={route!r})")
        if str(root.attrs.get("http.response.status_code")) != str(status):
            wrong.append(f"the edge's server span has http.response.status_code="
                         f"{root.attrs.get('http.response.status_code')!r}, not {status}")
    if wrong:
        _fail("; ".join(wrong), spans, receiver)
    return root


def test_call_trace(receiver, market, say):
    """One call without a traceparent: its trace is the one whose edge root started during
    the call and that reached the shim."""
    slug = market.calls["slug"]
    t0 = time.time_ns()
    r = market.call(path="traced")
    t1 = time.time_ns()
    assert r.status == 200, f"call: {r}"

    def ours(spans):
        for root in spans:
            if root.service == EDGE and root.kind == "server" and not root.parent_id and t0 <= root.start_ns <= t1:
                trace = [s for s in spans if s.trace_id == root.trace_id]
                if _complete({EDGE, AGENT, SHIM})(trace):
                    return trace
        return None

    try:
        spans = receiver.wait_for("one call's trace across souq-edge, souq-agent and souq-shim", ours, WITHIN)
    except AssertionError:
        near = [s for s in receiver.snapshot() if t0 - 1e9 <= s.start_ns <= t1 + 1e9]
        _fail("no complete trace of the call (spans started around it below)", near, receiver)
    root = _check_call_trace(spans, receiver, "")
    assert slug not in str(root.attrs.get("http.route")), f"http.route holds the slug: {root}"
    say(f"call: trace {root.trace_id}, {len(spans)} spans from {sorted({s.service for s in spans})}, "
        f"route {root.attrs.get('http.route')!r}")


def test_client_traceparent(receiver, market, say):
    header, trace_id, parent = traceparent()
    r = market.call(headers={"traceparent": header}, path="with-parent")
    assert r.status == 200, f"call: {r}"
    try:
        spans = receiver.wait_for(f"the trace {trace_id} of the client's traceparent",
                                  lambda all_: _complete({EDGE, AGENT, SHIM}, parent)([s for s in all_ if s.trace_id == trace_id]),
                                  WITHIN)
    except AssertionError:
        _fail(f"no complete trace {trace_id} under the client's span {parent}", receiver.trace(trace_id), receiver)
    _check_call_trace(spans, receiver, parent)
    say(f"traceparent: {len(spans)} spans in the client's trace {trace_id}, root's parent {parent}")


def test_execute_trace(receiver, market, say):
    header, trace_id, parent = traceparent()
    r = market.execute(headers={"traceparent": header})
    assert r.status == 200 and (r.json() or {}).get("stdout") == "42\n", f"execute: {r}"
    want = {EDGE, CP, AGENT, SHIM}
    try:
        spans = receiver.wait_for(f"the execute's trace {trace_id} across {sorted(want)}",
                                  lambda all_: _complete(want, parent)([s for s in all_ if s.trace_id == trace_id]),
                                  WITHIN)
    except AssertionError:
        _fail(f"no complete execute trace {trace_id}", receiver.trace(trace_id), receiver)
    by_id = {s.span_id: s for s in spans}
    chains = [_chain(s, by_id) for s in spans if s.service == SHIM]
    if [SHIM, AGENT, CP, EDGE] not in chains:
        _fail(f"no shim span under agent under control plane under edge: chains {chains}", spans, receiver)
    say(f"execute: {len(spans)} spans in trace {trace_id}, chain {' <- '.join([SHIM, AGENT, CP, EDGE])}")


def test_problem_trace_id(receiver, market, say):
    """A problem+json answer's trace_id is the trace its spans are in, with and without a
    client traceparent."""
    missing = "/call/obs-no-such-api-here/x"
    header, trace_id, parent = traceparent()
    r = market.edge.request("GET", missing, token=market.provider, headers={"traceparent": header})
    body = r.json() or {}
    assert r.status == 404 and r.headers.get("content-type", "").startswith("application/problem+json"), f"{r}"
    assert body.get("trace_id") == trace_id, f"the problem's trace_id {body.get('trace_id')!r} is not the client's {trace_id}"

    r = market.edge.request("GET", missing, token=market.provider)
    body = r.json() or {}
    own = body.get("trace_id")
    assert r.status == 404 and isinstance(own, str) and len(own) == 32 and own != "0" * 32, f"no trace_id: {r}"
    for tid, client_parent in ((trace_id, parent), (own, "")):
        try:
            spans = receiver.wait_for(f"the edge's spans of the problem's trace {tid}",
                                      lambda all_, t=tid: [s for s in all_ if s.trace_id == t and s.service == EDGE],
                                      WITHIN)
        except AssertionError:
            _fail(f"no edge span in the problem's trace {tid}", [], receiver)
        roots = [s for s in spans if s.kind == "server" and s.parent_id == client_parent]
        if not roots:
            _fail(f"the problem's trace {tid} has no edge server span under {client_parent or 'no parent'}",
                  receiver.trace(tid), receiver)
        code = roots[0].attrs.get("http.response.status_code")
        if str(code) != "404":
            _fail(f"the edge's server span says status {code!r}, the answer 404", receiver.trace(tid), receiver)
    say(f"problem+json: trace_id {trace_id} (client's) and {own} (the edge's own) match their spans")
