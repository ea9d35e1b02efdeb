"""souq-shim (python): the Python runtime's shim. Its mode is argv[1]:
  session (the default): a warm sandbox that belongs to one user and runs many executions;
  serve: a long-lived instance of one deployed handler, see serve.py.
It talks to the agent over the Unix socket named by argv[2] (a directory the agent mounts
read-only), or, in session mode, over stdin/stdout when none is named.

In session mode the agent writes requests
  {"v":1,"id":I,"code_len":N,"stdin_len":M,"timeout_ms":T,"output_limit":L
   [,"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"]}\n + code + stdin
and the shim answers each, in order, with
  {"id":I,"exit_code":..,"signal":..,"timed_out":..,"truncated":..,"oom_killed":..,
   "duration_ms":..,"stdout_len":A,"stderr_len":B,"clean":..,"start_ns":S,"end_ns":E}\n
  + stdout + stderr.
Other keys of a request are ignored. A traceparent (a string of at most 128 characters
in the W3C shape; anything else is ignored) becomes the run's TRACEPARENT environment
variable. S and E are this shim's wall clock (Unix epoch nanoseconds) right after it read
the whole request and right before it writes the answer.
Each execution is a fresh process forked from this warm interpreter, in a fresh
/tmp/souq/run, with its own pipes; afterwards every other process in the container is
killed. Nothing but frames is ever written to stdout; on a malformed request the shim
prints "souq-shim: <reason>" to stderr and exits 70.
"""
import json
import os
import re
import sys
import time

WORKDIR = "/tmp/souq"
MAX_HEADER = 4096
CHUNK = 65536


def fail(reason):
    os.write(2, ("souq-shim: %s\n" % reason).encode("utf-8", "replace"))
    os._exit(70)


RUNDIR = WORKDIR + "/run"
# The channel to the agent: the socket named on the command line, or else stdin/stdout.
IN_FD, OUT_FD = 0, 1
CHANNEL = None
PR_SET_DUMPABLE = 4
LIBC = None
SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
MAX_TRACEPARENT = 128
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def traceparent(hdr):
    """The request's W3C traceparent, or None when it has none or it is malformed."""
    tp = hdr.get("traceparent")
    if isinstance(tp, str) and len(tp) <= MAX_TRACEPARENT and TRACEPARENT.fullmatch(tp):
        return tp
    return None


def read_exact(n, what):
    chunks = []
    left = n
    while left > 0:
        buf = os.read(IN_FD, min(CHUNK, left))
        if not buf:
            fail("short read in %s: got %d of %d bytes" % (what, n - left, n))
        chunks.append(buf)
        left -= len(buf)
    return b"".join(chunks)


def read_request():
    line = bytearray()
    while True:
        b = os.read(IN_FD, 1)
        if not b:
            if not line:
                return None
            fail("short read in header")
        if b == b"\n":
            break
        line += b
        if len(line) >= MAX_HEADER:
            fail("header line longer than %d bytes" % MAX_HEADER)
    try:
        hdr = json.loads(line.decode("utf-8"))
    except ValueError as e:
        fail("malformed header: %s" % e)
    if not isinstance(hdr, dict) or hdr.get("v") != 1:
        fail("malformed header: expected an object with v=1")
    for key in ("id", "code_len", "stdin_len", "timeout_ms", "output_limit"):
        n = hdr.get(key)
        if type(n) is not int or n < 0:
            fail("malformed header: %s must be a non-negative integer" % key)
    hdr["traceparent"] = traceparent(hdr)
    code = read_exact(hdr["code_len"], "code")
    stdin = read_exact(hdr["stdin_len"], "stdin")
    hdr["start_ns"] = time.time_ns()  # the whole request is read
    return hdr, code, stdin


def oom_kills():
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
    return None


def remove_tree(path):
    """Removes path without following symlinks (a run may have planted them)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    import stat
    if stat.S_ISDIR(st.st_mode):
        for name in os.listdir(path):
            remove_tree(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


def sweep():
    """Kills every process but PID 1 and this shim; True when none is left."""
    import signal
    import time
    me = os.getpid()
    deadline = time.monotonic() + 1.0
    while True:
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not others:
            return True
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # Reap our own children; tini reaps the orphans.
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


def child(code, stdin_path, out_w, err_w, tp):
    """Runs in the forked process: becomes the user's program."""
    import builtins
    import traceback
    try:
        os.setsid()
        if LIBC is not None:
            LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        try:
            # The OOM killer takes the run, not the shim.
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        fd = os.open(stdin_path, os.O_RDONLY | os.O_NOFOLLOW)
        os.dup2(fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 1024)
        os.chdir(RUNDIR)
        os.environ.clear()
        os.environ.update(SAFE_ENV)
        if tp is not None:
            os.environ["TRACEPARENT"] = tp
        import io
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=False)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
        sys.argv = ["main.py"]
        main_path = os.path.join(RUNDIR, "main.py")
        glb = {"__name__": "__main__", "__file__": main_path, "__builtins__": builtins}
        status = 0
        try:
            exec(compile(code, main_path, "exec"), glb)
        except SystemExit as e:
            if e.code is None:
                status = 0
            elif isinstance(e.code, int):
                status = e.code & 0xFF
            else:
                print(e.code, file=sys.stderr)
                status = 1
        except BaseException as e:
            # Leave this shim's own frame out of the user's traceback.
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)
            status = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)
    except BaseException:
        os._exit(70)


def run_one(hdr, code, stdin):
    import selectors
    import signal
    import time
    t0 = time.monotonic()
    deadline = t0 + hdr["timeout_ms"] / 1000.0
    limit = hdr["output_limit"]
    remove_tree(RUNDIR)
    os.makedirs(RUNDIR, mode=0o700)
    with open(os.path.join(RUNDIR, "main.py"), "wb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW, 0o600)) as f:
        f.write(code)
    stdin_path = os.path.join(WORKDIR, "stdin")
    try:
        os.unlink(stdin_path)
    except FileNotFoundError:
        pass
    with open(stdin_path, "wb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW | os.O_EXCL, 0o600)) as f:
        f.write(stdin)
    oom_before = oom_kills()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        child(code, stdin_path, out_w, err_w, hdr["traceparent"])
    os.close(out_w)
    os.close(err_w)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    room = limit
    timed_out = truncated = False
    status = None
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = 2
    exited_at = None
    while open_fds:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if status is None:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                status, exited_at = st, now
        # Once the program has exited, whatever still holds its pipes (a daemon it left
        # behind) gets a moment to flush, then is swept away.
        if exited_at is not None and now - exited_at > 0.05:
            break
        wait = min(deadline - now, 0.01 if status is None else 0.005)
        for key, _ in sel.select(wait):
            data = os.read(key.fd, CHUNK)
            if not data:
                sel.unregister(key.fd)
                open_fds -= 1
                continue
            keep = data[:room]
            bufs[key.fd] += keep
            room -= len(keep)
            if len(keep) < len(data):
                truncated = True
        if truncated:
            break
    # Both pipes closed but the program lives on: it may still exit before the deadline.
    while status is None and not (timed_out or truncated):
        wpid, st = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            status = st
        elif time.monotonic() >= deadline:
            timed_out = True
        else:
            time.sleep(0.001)
    if status is None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = None
    duration = time.monotonic() - t0
    clean = sweep()
    sel.close()
    for fd in bufs:
        os.close(fd)
    oom_after = oom_kills()
    exit_code = sig = None
    if status is not None:
        if os.WIFEXITED(status):
            exit_code = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
    out, err = bytes(bufs[out_r]), bytes(bufs[err_r])
    reply = {
        "id": hdr["id"], "exit_code": exit_code, "signal": sig, "timed_out": timed_out,
        "truncated": truncated, "oom_killed": bool(oom_before is not None and oom_after is not None and oom_after > oom_before),
        "duration_ms": int(duration * 1000), "stdout_len": len(out), "stderr_len": len(err), "clean": clean,
        "start_ns": hdr["start_ns"], "end_ns": time.time_ns(),
    }
    frame = json.dumps(reply, separators=(",", ":")).encode() + b"\n" + out + err
    mv = memoryview(frame)
    while mv:
        mv = mv[os.write(OUT_FD, mv):]


def session(channel=None):
    # Everything a run needs is imported once here, so a forked run pays for none of it.
    import builtins, io, selectors, signal, socket, stat, time, traceback  # noqa: F401
    global IN_FD, OUT_FD, CHANNEL
    if channel:
        CHANNEL = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        CHANNEL.connect(channel)
        IN_FD = OUT_FD = CHANNEL.fileno()
    global LIBC
    try:
        # Not dumpable: a run (same uid) can then neither open /proc/<shim>/fd/1 to
        # write fake frames nor ptrace the shim. A forked run makes itself dumpable
        # again, so that its own /proc entries are its own.
        import ctypes
        LIBC = ctypes.CDLL(None, use_errno=True)
        LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (ImportError, OSError, AttributeError) as e:
        os.write(2, ("souq-shim: cannot drop dumpable: %s\n" % e).encode())
    os.makedirs(WORKDIR, mode=0o700, exist_ok=True)
    sys.stdout.flush()
    while True:
        req = read_request()
        if req is None:
            return
        run_one(*req)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "session"
    try:
        if mode == "serve":
            # -I keeps this directory off sys.path; serve.py sits next to this file.
            sys.dont_write_bytecode = True
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import serve
            del sys.path[0]
            serve.serve(sys.argv[2] if len(sys.argv) > 2 else None)
        elif mode != "session":
            fail("unknown mode %r" % mode)
        session(sys.argv[2] if len(sys.argv) > 2 else None)
    except OSError as e:
        fail("%s" % e)


if __name__ == "__main__":
    main()
