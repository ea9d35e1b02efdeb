"""A real OTLP/gRPC trace receiver for the observability tests: grpcio serving
opentelemetry-proto's TraceService on 127.0.0.1:<free port>, keeping every span it is
sent, flattened to a `Span` with its service (the resource's service.name)."""
import concurrent.futures
import threading
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(v):
    """The Python value of an OTLP AnyValue."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


class Span:
    """One received span: ids as lowercase hex ('' for no parent)."""

    def __init__(self, service, scope, s):
        self.service = service
        self.scope = scope
        self.trace_id = s.trace_id.hex()
        self.span_id = s.span_id.hex()
        self.parent_id = s.parent_span_id.hex()
        self.name = s.name
        self.kind = KINDS.get(s.kind, str(s.kind))
        self.attrs = {a.key: _value(a.value) for a in s.attributes}
        self.start_ns = s.start_time_unix_nano
        self.end_ns = s.end_time_unix_nano

    def __repr__(self):
        attrs = {k: v for k, v in self.attrs.items() if k.startswith(("http.", "rpc.", "souq.", "otel."))}
        return (f"{self.service:<19} {self.kind:<8} trace={self.trace_id} span={self.span_id} "
                f"parent={self.parent_id or '-':<16} {self.name!r} {attrs}")


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 (the gRPC method's name)
        spans = []
        for rs in request.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "?")
            for ss in rs.scope_spans:
                spans += [Span(service, ss.scope.name, s) for s in ss.spans]
        self.receiver.add(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver:
    """Start with `start()`; `endpoint` is its http:// URL; `stop()` ends it."""

    def __init__(self, port=0, keep=True):
        self.keep = keep
        self.count = 0
        self.spans = []
        self.exports = 0
        self.last_export = 0.0
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop(grace=None)

    def add(self, spans):
        with self.lock:
            self.count += len(spans)
            if self.keep:
                self.spans += spans
            self.exports += 1
            self.last_export = time.monotonic()

    def snapshot(self):
        with self.lock:
            return list(self.spans)

    def trace(self, trace_id):
        return [s for s in self.snapshot() if s.trace_id == trace_id]

    def quiet(self, seconds, within):
        """Waits (at most `within` s) until nothing was exported for `seconds`: the
        exporters' batches of earlier work have all arrived."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last_export
            if idle >= seconds:
                return True
            time.sleep(0.2)
        return False

    def wait_for(self, what, predicate, within=30.0):
        """Polls `predicate(spans)` until it returns something truthy, which is returned;
        raises AssertionError with every span received when it never does."""
        deadline = time.monotonic() + within
        while True:
            got = predicate(self.snapshot())
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {within:.0f} s\n{self.dump()}")
            time.sleep(0.25)

    def dump(self, spans=None, limit=80):
        spans = self.snapshot() if spans is None else spans
        lines = [f"  received {len(self.snapshot())} span(s) in {self.exports} export(s); "
                 f"{'the last ' + str(limit) if len(spans) > limit else 'these'}:"]
        lines += [f"    {s!r}" for s in spans[-limit:]]
        return "\n".join(lines)


if __name__ == "__main__":
    # A sink for benchmarks: `python3 otlp_receiver.py [PORT]` serves on 127.0.0.1:PORT
    # (default 4317), keeps nothing, and prints how many spans arrived every 10 s.
    import sys
    sink = Receiver(port=int(sys.argv[1]) if len(sys.argv) > 1 else 4317, keep=False).start()
    print(f"OTLP sink on {sink.endpoint}", flush=True)
    try:
        while True:
            time.sleep(10)
            print(f"{sink.count} spans in {sink.exports} exports", flush=True)
    except KeyboardInterrupt:
        sink.stop()
