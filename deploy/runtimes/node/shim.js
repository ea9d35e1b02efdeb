// souq-shim (node): runs one user snippet inside a Souq sandbox.
//
// Protocol, mode "execute" (argv[2] here, the default). The agent writes to fd 0:
//   1. one JSON header line: {"v":1,"code_len":N,"stdin_len":M}\n  (max 4096 bytes)
//   2. exactly N bytes of user code (UTF-8)
//   3. exactly M bytes of stdin for the user program
// The shim stores them as /tmp/souq/main.js and /tmp/souq/stdin, runs node on
// the script with that file as fd 0 and the container's stdout/stderr
// inherited, and exits with the program's status (128+signal if killed).
// Node cannot exec, so the program runs as a child (spawnSync). The shim never
// writes to stdout; on a bad header or a short read it prints
// "souq-shim: <reason>" to stderr and exits 70. Built-in modules only.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const WORKDIR = '/tmp/souq';
const MAX_HEADER = 4096;
const CHUNK = 65536;
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function fail(reason) {
  try { fs.writeSync(2, `souq-shim: ${reason}\n`); } catch (_) { /* nothing left to do */ }
  process.exit(70);
}

// One read from fd 0, retrying on EAGAIN (fd 0 may be non-blocking) and EINTR.
function readSome(buf, len) {
  for (;;) {
    try {
      return fs.readSync(0, buf, 0, len, null);
    } catch (e) {
      if (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK' || e.code === 'EINTR') {
        Atomics.wait(sleepCell, 0, 0, 2); // sleep 2 ms
        continue;
      }
      if (e.code === 'EOF') return 0;
      throw e;
    }
  }
}

function readHeader() {
  const one = Buffer.alloc(1);
  const bytes = [];
  for (;;) {
    if (readSome(one, 1) === 0) fail(`short read in header (${bytes.length} bytes, no newline)`);
    if (one[0] === 0x0a) break;
    bytes.push(one[0]);
    if (bytes.length >= MAX_HEADER) fail(`header line longer than ${MAX_HEADER} bytes`);
  }
  let hdr;
  try {
    hdr = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    fail(`malformed header: ${e.message}`);
  }
  if (hdr === null || typeof hdr !== 'object' || Array.isArray(hdr) || hdr.v !== 1) {
    fail('malformed header: expected an object with v=1');
  }
  for (const key of ['code_len', 'stdin_len']) {
    if (!Number.isSafeInteger(hdr[key]) || hdr[key] < 0) {
      fail(`malformed header: ${key} must be a non-negative integer`);
    }
  }
  return [hdr.code_len, hdr.stdin_len];
}

function copyExact(n, file, what) {
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT |
    fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600);
  const buf = Buffer.alloc(Math.min(CHUNK, Math.max(n, 1)));
  let left = n;
  while (left > 0) {
    const got = readSome(buf, Math.min(buf.length, left));
    if (got === 0) fail(`short read in ${what}: got ${n - left} of ${n} bytes`);
    let off = 0;
    while (off < got) off += fs.writeSync(fd, buf, off, got - off);
    left -= got;
  }
  fs.closeSync(fd);
}

function execute() {
  const [codeLen, stdinLen] = readHeader();
  fs.mkdirSync(WORKDIR, { recursive: true, mode: 0o700 });
  fs.chmodSync(WORKDIR, 0o700);
  const main = path.join(WORKDIR, 'main.js');
  const stdinPath = path.join(WORKDIR, 'stdin');
  copyExact(codeLen, main, 'code');
  copyExact(stdinLen, stdinPath, 'stdin');
  const stdinFd = fs.openSync(stdinPath, 'r');
  const r = spawnSync(process.execPath, [main], {
    stdio: [stdinFd, 'inherit', 'inherit'],
    cwd: WORKDIR,
  });
  if (r.error) fail(`cannot run node: ${r.error.message}`);
  if (r.signal) process.exit(128 + (os.constants.signals[r.signal] || 0));
  process.exit(r.status === null ? 70 : r.status);
}

const mode = process.argv[2] || 'execute';
if (mode === 'session') {
  // A warm sandbox of one user: many executions, each in a fresh process.
  require('./session.js').session();
  return;
}
if (mode !== 'execute') fail(`unknown mode ${JSON.stringify(mode)}`);
try {
  execute();
} catch (e) {
  fail(e && e.message ? e.message : String(e));
}
