"""souq-shim (python): runs one user snippet inside a Souq sandbox.

Protocol, mode "execute" (argv[1], the default). The agent writes to fd 0:
  1. one JSON header line: {"v":1,"code_len":N,"stdin_len":M}\n  (max 4096 bytes)
  2. exactly N bytes of user code (UTF-8)
  3. exactly M bytes of stdin for the user program
The shim stores them as /tmp/souq/main.py and /tmp/souq/stdin, makes that file
fd 0 and execs python3 on the script, so the program's exit code and its
stdout/stderr are the container's own. The shim never writes to stdout; on a
bad header or a short read it prints "souq-shim: <reason>" to stderr, exits 70.
"""
import json
import os
import sys

WORKDIR = "/tmp/souq"
MAX_HEADER = 4096
CHUNK = 65536


def fail(reason):
    os.write(2, ("souq-shim: %s\n" % reason).encode("utf-8", "replace"))
    os._exit(70)


def read_header():
    line = bytearray()
    while True:
        b = os.read(0, 1)  # byte by byte: consume nothing past the newline
        if not b:
            fail("short read in header (%d bytes, no newline)" % len(line))
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
    lens = []
    for key in ("code_len", "stdin_len"):
        n = hdr.get(key)
        if type(n) is not int or n < 0:
            fail("malformed header: %s must be a non-negative integer" % key)
        lens.append(n)
    return lens


def copy_exact(n, path, what):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    left = n
    while left > 0:
        buf = os.read(0, min(CHUNK, left))
        if not buf:
            fail("short read in %s: got %d of %d bytes" % (what, n - left, n))
        mv = memoryview(buf)
        while mv:
            mv = mv[os.write(fd, mv):]
        left -= len(buf)
    os.close(fd)


def execute():
    code_len, stdin_len = read_header()
    os.makedirs(WORKDIR, mode=0o700, exist_ok=True)
    os.chmod(WORKDIR, 0o700)
    main = os.path.join(WORKDIR, "main.py")
    stdin_path = os.path.join(WORKDIR, "stdin")
    copy_exact(code_len, main, "code")
    copy_exact(stdin_len, stdin_path, "stdin")
    os.chdir(WORKDIR)
    fd = os.open(stdin_path, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    os.execv("/usr/bin/python3", ["python3", main])


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "execute"
    if mode != "execute":
        fail("unknown mode %r" % mode)
    try:
        execute()
    except OSError as e:
        fail("%s" % e)


if __name__ == "__main__":
    main()
