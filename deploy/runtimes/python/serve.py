"""souq-shim (python), mode "serve": one long-lived instance of a deployed handler.

The shim connects to the agent's Unix socket (argv[2]). Every header is one line of JSON
(at most 4096 bytes with its newline) followed by exactly the bytes its length names:
  agent -> shim, once:  {"v":1,"op":"load","code_len":N,"output_limit":L}\n + handler.py
  shim -> agent, once:  {"ready":true}\n, or {"ready":false,"error_len":N}\n + the
                        traceback, after which the shim exits 0
  agent -> shim, many:  {"id":I,"len":N[,"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"]}\n
                        + the event as JSON (pipelining allowed)
  shim -> agent, one per request, in order:
                        {"id":I,"type":"json"|"text"|"error","len":N,"start_ns":S,"end_ns":E}\n
                        + N bytes
Other keys of a header are ignored; so is the traceparent (the handler is not traced).
S and E are this shim's wall clock (Unix epoch nanoseconds) right after it read the whole
request and right before it queues the answer.
handler.py defines `handler(event)` (or `async def handler(event)`); its return value is
sent as compact JSON, else as its str() ("text"); an exception is sent as
"Type: message" ("error") and its traceback goes to stderr. An answer over L bytes becomes
an "error". The socket is read in large chunks and all the answers to one read go out in
one send. EOF between requests: exit 0; malformed header or short read: exit 70. stdout
and stderr are the handler's own (the agent's log); no frame is ever written there.
"""
import json
import linecache
import os
import socket
import sys
import time
import traceback
import types

MAX_HEADER = 4096
CHUNK = 65536
MAX_ERROR = 65536
FILENAME = "handler.py"
SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def fail(reason, status=70):
    os.write(2, ("souq-shim: %s\n" % reason).encode("utf-8", "replace"))
    os._exit(status)


class Channel:
    """Frames on the agent's socket: large reads, answers sent in one batch per read."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = bytearray()
        self.pos = 0  # start of the first unparsed frame in buf
        self.chunk = bytearray(CHUNK)
        self.view = memoryview(self.chunk)
        self.out = []

    def flush(self):
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                fail("the agent hung up", 0)

    def fill(self):
        """Sends the pending answers (we may block now), then reads; False on EOF."""
        self.flush()
        n = self.sock.recv_into(self.chunk)
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += self.view[:n]
        return n > 0

    def frame(self, check):
        """The next (header, body), or None on EOF between frames; check(header) -> len."""
        buf = self.buf
        while True:
            nl = buf.find(b"\n", self.pos, self.pos + MAX_HEADER)
            if nl >= 0:
                break
            if len(buf) - self.pos >= MAX_HEADER:
                fail("header line longer than %d bytes" % MAX_HEADER)
            if not self.fill():
                if len(buf) == self.pos:
                    return None
                fail("short read in header (%d bytes, no newline)" % (len(buf) - self.pos))
        try:
            hdr = json.loads(buf[self.pos:nl])
        except ValueError as e:
            fail("malformed header: %s" % e)
        n = check(hdr)
        off = nl + 1 - self.pos  # fill() moves the buffer's start, not this offset
        while len(buf) - self.pos - off < n:
            if not self.fill():
                fail("short read in body: got %d of %d bytes" % (len(buf) - self.pos - off, n))
        start = self.pos + off
        self.pos = start + n
        return hdr, buf[start:self.pos]


def count(hdr, key):
    n = hdr.get(key) if isinstance(hdr, dict) else None
    if type(n) is not int or n < 0:
        fail("malformed header: %s must be a non-negative integer" % key)
    return n


def load_header(hdr):
    if not isinstance(hdr, dict) or hdr.get("v") != 1 or hdr.get("op") != "load":
        fail('malformed header: expected {"v":1,"op":"load",...}')
    count(hdr, "output_limit")
    return count(hdr, "code_len")


def request_header(hdr):
    count(hdr, "id")
    return count(hdr, "len")


def format_exception(e):
    """The traceback of e from its first frame in handler.py on (the shim's are noise)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def load(code):
    """(the handler function, None), or (None, why it cannot be loaded)."""
    mod = types.ModuleType("handler")
    mod.__file__ = FILENAME
    sys.modules["handler"] = mod
    try:
        src = code.decode("utf-8")
        # Tracebacks then quote the handler's lines.
        linecache.cache[FILENAME] = (len(src), None, src.splitlines(True), FILENAME)
        exec(compile(src, FILENAME, "exec"), mod.__dict__)
    except BaseException as e:  # SystemExit too: the handler failed to load
        return None, format_exception(e)
    fn = mod.__dict__.get("handler")
    if fn is None:
        return None, "handler.py does not define a function handler(event)\n"
    if not callable(fn):
        return None, "handler.py: handler is not a function (its type is %s)\n" % type(fn).__name__
    return fn, None


LOOP = None


def run_async(awaitable):
    global LOOP
    if LOOP is None:
        import asyncio
        LOOP = asyncio.new_event_loop()
        asyncio.set_event_loop(LOOP)
    return LOOP.run_until_complete(awaitable)


def error_answer(e):
    try:
        sys.stderr.write(format_exception(e))
        sys.stderr.flush()
    except Exception:
        pass
    try:
        msg = str(e)
    except Exception:
        msg = "<unprintable>"
    msg = "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__
    return "error", msg.encode("utf-8", "replace")


def answer(fn, body):
    """(type, bytes) for one request."""
    try:
        event = json.loads(body)
    except ValueError as e:
        return "error", ("souq-shim: the event is not valid JSON: %s" % e).encode()
    try:
        v = fn(event)
        if hasattr(v, "__await__"):
            v = run_async(v)
    except BaseException as e:  # SystemExit too: one request must not end the instance
        return error_answer(e)
    try:
        s = ENCODER.encode(v)
        try:
            return "json", s.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: \uXXXX escapes are still JSON
            return "json", ASCII_ENCODER.encode(v).encode("ascii")
    except Exception:
        pass  # not JSON-serialisable
    try:
        if isinstance(v, (bytes, bytearray)):
            return "text", bytes(v).decode("utf-8", "replace").encode("utf-8")
        return "text", str(v).encode("utf-8", "replace")
    except BaseException as e:
        return error_answer(e)


def serve(path):
    if not path:
        fail("serve needs the socket path as its second argument")
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(SAFE_ENV)
    sys.argv = [FILENAME]
    ch = Channel(path)
    first = ch.frame(load_header)
    if first is None:
        fail("EOF before the load frame", 0)
    hdr, code = first
    limit = hdr["output_limit"]
    fn, err = load(bytes(code))
    if err is not None:
        data = err.encode("utf-8", "replace")[:MAX_ERROR].decode("utf-8", "ignore").encode("utf-8")
        ch.out += [b'{"ready":false,"error_len":%d}\n' % len(data), data]
        ch.flush()
        sys.stdout.flush()
        os._exit(0)
    ch.out.append(b'{"ready":true}\n')
    out = ch.out
    while True:
        frame = ch.frame(request_header)
        if frame is None:
            break
        hdr, body = frame
        start_ns = time.time_ns()
        typ, data = answer(fn, body)
        if len(data) > limit:
            typ, data = "error", b"the handler's answer is %d bytes, over the limit of %d bytes" % (len(data), limit)
        out.append(b'{"id":%d,"type":"%s","len":%d,"start_ns":%d,"end_ns":%d}\n'
                   % (hdr["id"], typ.encode(), len(data), start_ns, time.time_ns()))
        out.append(data)
    ch.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)
