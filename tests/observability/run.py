"""The observability tests, as scripts/test-observability.sh runs them (with the venv it
makes): an OTLP/gRPC receiver, `souq up` exporting to it, a prometheus scraping it, one
shared marketplace set-up, then each test in turn. Ends with `N passed, N failed`; exits
non-zero on any failure. Every process is stopped and every temp dir removed, also on
failure, SIGTERM or Ctrl-C. Usage: run.py ROOT [-k SUBSTRING]"""
import os
import pathlib
import signal
import sys
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import api  # noqa: E402
import otlp_receiver  # noqa: E402
import procs  # noqa: E402
import test_metrics  # noqa: E402
import test_traces  # noqa: E402

TESTS = [
    ("prometheus counts known traffic", lambda c: test_metrics.test_prometheus_counts(c["prom"], c["market"], c["say"])),
    ("alert rules evaluate on live data", lambda c: test_metrics.test_rules_load(c["prom"], c["say"])),
    ("one call, one trace across edge, agent and shim", lambda c: test_traces.test_call_trace(c["receiver"], c["market"], c["say"])),
    ("a client traceparent is adopted", lambda c: test_traces.test_client_traceparent(c["receiver"], c["market"], c["say"])),
    ("an execute: edge, control plane, agent, shim", lambda c: test_traces.test_execute_trace(c["receiver"], c["market"], c["say"])),
    ("problem+json names its trace", lambda c: test_traces.test_problem_trace_id(c["receiver"], c["market"], c["say"])),
]


def say(msg):
    print(f"  {msg}", flush=True)


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    root = pathlib.Path(sys.argv[1]).resolve()
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
    binary = os.environ.get("SOUQ_BIN") or sys.exit("run.py: set SOUQ_BIN to the souq binary")
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    receiver = souq = prom = None
    passed, failed = [], []
    try:
        receiver = otlp_receiver.Receiver().start()
        print(f"OTLP receiver on {receiver.endpoint}", flush=True)
        souq = procs.SouqUp(binary, receiver.endpoint)
        souq.start()
        print(f"souq up: edge at {souq.url} (data dir {souq.data_dir}), took {time.monotonic() - started:.0f} s", flush=True)
        prom = procs.Prometheus(souq.url.removeprefix("http://"), str(root / "deploy/prometheus/souq-rules.yaml")).start()
        print(f"prometheus on {prom.url}", flush=True)
        t = time.monotonic()
        market = api.Market(api.Edge(souq.url), souq.mail_dir)
        print(f"set-up: 2 users, APIs {market.calls['slug']} and {market.limited['slug']} deployed and subscribed "
              f"in {time.monotonic() - t:.0f} s", flush=True)
        ctx = {"receiver": receiver, "souq": souq, "prom": prom, "market": market, "say": say}
        for name, test in TESTS:
            if only and only not in name:
                continue
            t = time.monotonic()
            print(f"--- {name}", flush=True)
            try:
                test(ctx)
                passed.append(name)
                print(f"PASS {name} ({time.monotonic() - t:.1f} s)", flush=True)
            except AssertionError as e:
                failed.append(name)
                print(f"FAIL {name} ({time.monotonic() - t:.1f} s): {e}", flush=True)
    except KeyboardInterrupt as e:
        failed.append(f"interrupted ({e})")
        print(f"FAIL interrupted ({e})", flush=True)
    except Exception as e:  # noqa: BLE001 (set-up failed: say what and where, then clean up)
        failed.append(f"set-up: {e}")
        print(f"FAIL set-up: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short; nor may a closed
        # stdout: everything is stopped first, and only then reported.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        tail = procs.tail(souq.log, 25) if failed and souq is not None and os.path.exists(souq.log) else None
        notes = []
        for what, thing in (("prometheus", prom), ("souq up", souq), ("OTLP receiver", receiver)):
            if thing is None:
                continue
            try:
                left = thing.stop()
                if what == "souq up" and left:
                    notes.append(f"removed {left} container(s) souq up left behind")
            except Exception as e:  # noqa: BLE001 (cleanup goes on with the rest)
                notes.append(f"cleanup of {what} failed: {e}")
        if tail:
            print(f"souq log tail:\n{tail}", flush=True)
        for n in notes:
            print(n, flush=True)
    print(f"\nobservability tests took {time.monotonic() - started:.0f} s")
    print(f"{len(passed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
