// souq-shim (node), mode "session": one long-lived sandbox of ONE user runs
// many executions, each in a fresh node process.
//
// Protocol (lengths in bytes). The agent writes to fd 0, repeatedly:
//   {"v":1,"id":<u64>,"code_len":N,"stdin_len":M,"timeout_ms":T,"output_limit":L
//    [,"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"]}\n
//   (one line, at most 4096 bytes with its newline), then N bytes of code, then
//   M bytes of stdin. Other keys are ignored. A traceparent (a string of at most
//   128 characters in the W3C shape; anything else is ignored) becomes the run's
//   TRACEPARENT environment variable.
// The shim answers on fd 1, one response per request, in order:
//   {"id":..,"exit_code":<int|null>,"signal":<int|null>,"timed_out":b,
//    "truncated":b,"oom_killed":b,"duration_ms":<int>,"stdout_len":A,
//    "stderr_len":B,"clean":b,"start_ns":S,"end_ns":E}\n  then A bytes of stdout,
//   then B bytes of stderr. S and E are the shim's wall clock (Unix epoch
//   nanoseconds, written as exact integers) right after it read the whole
//   request and right before it writes the answer.
// EOF on fd 0 between requests: exit 0. Malformed header or short read: one
// "souq-shim: ..." line on stderr, exit 70. Nothing else is ever written to fd 1.
//
// Warm start: one spare node process is kept started (runner script, IPC
// channel, stdin = an unlinked file, stdout/stderr = pipes). A request writes
// /tmp/souq/run/main.js, writes the stdin bytes into the spare's stdin file
// and sends the spare the job over IPC; the spare drops IPC, chdirs to the
// run dir and runs main.js as the main CommonJS module. When it exits, every
// other process in the container (except PID 1, the shim and a spare) is
// SIGKILLed, the pipes are drained and the response is written; then the
// run dir is removed and the next spare is started.
'use strict';
const fs = require('fs');
const os = require('os');
const { spawn } = require('child_process');

function session() {
  // The channel to the agent: the Unix socket named after the mode (in a directory the
  // agent mounts read-only), or else stdin/stdout.
  const channel = process.argv[3] ? require('net').connect(process.argv[3]) : null;
  const chanIn = channel || process.stdin;
  const chanOut = channel || process.stdout;
  const ROOT = '/tmp/souq';
  const RUN_DIR = ROOT + '/run';
  const MAIN = RUN_DIR + '/main.js';
  const RUNNER = ROOT + '/runner.js';
  const MAX_HEADER = 4096; // header line including its newline
  const SWEEP_MS = 1000;
  const DRAIN_GRACE_MS = 500; // pipes must reach EOF this long after the sweep
  const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's limit
  const STDIN_HIGH_WATER = 1 << 20; // pause fd 0 while busy and this much is buffered
  const U64_MAX = (1n << 64n) - 1n;
  const MAX_TRACEPARENT = 128;
  const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
  const CHILD_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' };
  // When the next spare starts. false: right after the response is written
  // (the run has the CPU to itself; the spare starts in a swept, quiet
  // container). true: right after the job is handed over (overlaps the run).
  const SPARE_EARLY = process.env.SOUQ_SPARE_EARLY === '1';
  // The sweep kills every process it can see. Only do that inside a sandbox,
  // where the shim is PID 1 or PID 1's child; elsewhere (a developer's
  // machine) only the run's own process is killed.
  const IN_SANDBOX = process.pid === 1 || process.ppid === 1;
  const sleepCell = new Int32Array(new SharedArrayBuffer(4));
  // The node that runs user code. The shim itself may run from an
  // execute-only copy of the node launcher (mode 0711, owned by root): the
  // kernel then makes the shim non-dumpable, so a run (same uid) can neither
  // open /proc/<shim>/fd/1 to write fake frames nor ptrace the shim. Runs
  // must stay dumpable (they set their own oom_score_adj), so they use a
  // readable node.
  const NODE_BIN = (() => {
    for (const p of [process.execPath, '/usr/local/bin/node', '/usr/bin/node']) {
      try { fs.accessSync(p, fs.constants.R_OK | fs.constants.X_OK); return p; } catch (_) { /* next */ }
    }
    return process.execPath;
  })();

  // The spare's program. It raises its own oom_score_adj so that the OOM
  // killer prefers a run (and whatever it forks) over the shim, then waits
  // for one job. Its stdout and stderr write synchronously: on a pipe, Node
  // queues a write the pipe cannot take at once, and a loop that never yields
  // (for(;;) process.stdout.write(s)) then fills its own memory, not the pipe,
  // so the shim never sees the output pass its limit and the run ends in an
  // OOM kill seconds later. Blocking writes hand every byte to the shim, which
  // cuts the run at its output limit as soon as the limit is passed.
  const RUNNER_SRC = `'use strict';
try { require('fs').writeFileSync('/proc/self/oom_score_adj', '1000'); } catch (_) {}
for (const s of [process.stdout, process.stderr]) {
  try { s._handle.setBlocking(true); } catch (_) {}
}
process.once('message', (job) => {
  process.disconnect();
  if (typeof job.traceparent === 'string') process.env.TRACEPARENT = job.traceparent;
  for (const k of ['send', 'disconnect', 'connected', 'channel', '_channel']) {
    try { delete process[k]; } catch (_) {}
  }
  process.chdir(job.dir);
  process.argv.length = 1;
  process.argv.push(job.main);
  setImmediate(() => require('module').runMain());
});
`;

  function fail(reason) {
    try { fs.writeSync(2, `souq-shim: ${reason}\n`); } catch (_) { /* nothing left */ }
    process.exit(70);
  }
  function warn(reason) {
    try { fs.writeSync(2, `souq-shim: ${reason}\n`); } catch (_) { /* ignore */ }
  }
  function sleepMs(ms) { Atomics.wait(sleepCell, 0, 0, ms); }
  function msSince(t) { return Number(process.hrtime.bigint() - t) / 1e6; }
  const { wallNs } = require('./clock.js');

  // ---------- fd 0: a byte queue and the request parser ----------
  const q = { chunks: [], len: 0 };
  function qIndexOfNewline(max) {
    let off = 0;
    for (const c of q.chunks) {
      const i = c.subarray(0, Math.min(c.length, max - off)).indexOf(0x0a);
      if (i >= 0) return off + i;
      off += c.length;
      if (off >= max) break;
    }
    return -1;
  }
  function qTake(n) {
    const out = Buffer.allocUnsafe(n);
    let o = 0;
    while (o < n) {
      const c = q.chunks[0];
      const k = Math.min(c.length, n - o);
      c.copy(out, o, 0, k);
      o += k;
      if (k === c.length) q.chunks.shift(); else q.chunks[0] = c.subarray(k);
    }
    q.len -= n;
    return out;
  }

  function parseHeader(line) {
    const text = line.toString('utf8');
    let hdr;
    try {
      hdr = JSON.parse(text);
    } catch (e) {
      fail(`malformed header: ${e.message}`);
    }
    if (hdr === null || typeof hdr !== 'object' || Array.isArray(hdr) || hdr.v !== 1) {
      fail('malformed header: expected an object with v=1');
    }
    // The id is a u64: echo its digits, not a double's rounding of them.
    let idText = null;
    const m = /"id"\s*:\s*(-?[0-9][0-9.eE+-]*)/.exec(text);
    if (m && /^(0|[1-9][0-9]*)$/.test(m[1]) && BigInt(m[1]) <= U64_MAX &&
        Number(m[1]) === hdr.id) {
      idText = m[1];
    } else if (Number.isSafeInteger(hdr.id) && hdr.id >= 0) {
      idText = String(hdr.id);
    }
    if (idText === null) fail('malformed header: id must be an integer in 0..2^64-1');
    for (const key of ['code_len', 'stdin_len', 'timeout_ms', 'output_limit']) {
      if (!Number.isSafeInteger(hdr[key]) || hdr[key] < 0) {
        fail(`malformed header: ${key} must be a non-negative integer`);
      }
    }
    const tp = hdr.traceparent;
    const traceparent = typeof tp === 'string' && tp.length <= MAX_TRACEPARENT && TRACEPARENT.test(tp) ? tp : null;
    return {
      idText, codeLen: hdr.code_len, stdinLen: hdr.stdin_len,
      timeoutMs: hdr.timeout_ms, limit: hdr.output_limit, traceparent,
    };
  }

  let eof = false;
  let busy = false;
  let pending = null; // parsed header whose body has not fully arrived

  function pump() {
    if (busy) return;
    if (pending === null) {
      const nl = qIndexOfNewline(MAX_HEADER);
      if (nl < 0) {
        if (q.len >= MAX_HEADER) fail(`header line longer than ${MAX_HEADER} bytes`);
        if (eof) {
          if (q.len === 0) quit(0);
          fail(`short read in header (${q.len} bytes, no newline)`);
        }
        return;
      }
      pending = parseHeader(qTake(nl + 1).subarray(0, nl));
    }
    const need = pending.codeLen + pending.stdinLen;
    if (q.len < need) {
      if (eof) {
        fail(q.len < pending.codeLen
          ? `short read in code: got ${q.len} of ${pending.codeLen} bytes`
          : `short read in stdin: got ${q.len - pending.codeLen} of ${pending.stdinLen} bytes`);
      }
      return;
    }
    const req = pending;
    pending = null;
    req.code = qTake(req.codeLen);
    req.stdin = qTake(req.stdinLen);
    req.t0 = process.hrtime.bigint(); // the request is fully read
    req.startNs = wallNs();
    busy = true;
    try {
      runJob(req);
    } catch (e) {
      fail(`cannot run: ${e && e.message ? e.message : e}`);
    }
  }

  function quit(code) {
    if (spare && spare.alive) { try { spare.proc.kill('SIGKILL'); } catch (_) { /* gone */ } }
    process.exit(code);
  }

  // ---------- files ----------
  function removeTree(p) {
    try {
      fs.rmSync(p, { recursive: true, force: true }); // lstat-based: unlinks symlinks
      return;
    } catch (_) { /* a run may have left unwritable directories */ }
    const fix = (d) => {
      let st;
      try { st = fs.lstatSync(d); } catch (_) { return; }
      if (!st.isDirectory()) return;
      try { fs.chmodSync(d, 0o700); } catch (_) { /* try anyway */ }
      let names = [];
      try { names = fs.readdirSync(d); } catch (_) { /* nothing */ }
      for (const n of names) fix(d + '/' + n);
    };
    fix(p);
    fs.rmSync(p, { recursive: true, force: true });
  }

  function ensureRoot() {
    let st = null;
    try { st = fs.lstatSync(ROOT); } catch (_) { /* missing */ }
    if (st && !st.isDirectory()) { fs.unlinkSync(ROOT); st = null; }
    if (!st) fs.mkdirSync(ROOT, { mode: 0o700 });
  }

  // (Re)writes the runner unless it is already intact; via rename, since a
  // spare that is still starting may be reading it.
  function ensureRunner() {
    ensureRoot();
    try {
      if (fs.readFileSync(RUNNER, 'utf8') === RUNNER_SRC) return;
    } catch (_) { /* missing or unreadable */ }
    const tmp = `${RUNNER}.${process.pid}.tmp`;
    removeTree(tmp);
    fs.writeFileSync(tmp, RUNNER_SRC, { mode: 0o600, flag: 'wx' });
    removeTree(RUNNER); // in case it became a directory
    fs.renameSync(tmp, RUNNER);
  }

  function writeExclusive(p, buf) {
    const fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT |
      fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
    } finally {
      fs.closeSync(fd);
    }
  }

  function readOomKills() {
    for (const f of ['/sys/fs/cgroup/memory.events', '/sys/fs/cgroup/memory/memory.oom_control']) {
      try {
        const m = /^oom_kill (\d+)$/m.exec(fs.readFileSync(f, 'utf8'));
        if (m) return Number(m[1]);
      } catch (_) { /* try the other */ }
    }
    return null;
  }

  // ---------- processes ----------
  // 'gone', 'zombie' (still holds its pid until PID 1 reaps it) or 'alive'.
  function procState(pid) {
    let stat;
    try { stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1'); } catch (_) { return 'gone'; }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' || rest[0] === 'X' || rest[0] === 'x') {
      // our own children are reaped by the event loop, later
      return Number(rest[1]) === process.pid ? 'gone' : 'zombie';
    }
    return 'alive';
  }

  // SIGKILLs every process but PID 1, the shim and the exempt pids, until
  // none is left or SWEEP_MS have passed; true if none is alive. It also waits
  // (within SWEEP_MS) for PID 1 to reap the zombies: they count against the
  // pids limit, and the next spare must be able to start.
  function sweep(exempt) {
    const skip = new Set([1, process.pid, ...exempt]);
    const deadline = Date.now() + SWEEP_MS;
    for (;;) {
      let alive = 0;
      let zombies = 0;
      let names = [];
      try { names = fs.readdirSync('/proc'); } catch (_) { return false; }
      for (const name of names) {
        const c = name.charCodeAt(0);
        if (c < 48 || c > 57) continue;
        const pid = Number(name);
        if (!Number.isInteger(pid) || skip.has(pid)) continue;
        const st = procState(pid);
        if (st === 'zombie') zombies++;
        if (st !== 'alive') continue;
        alive++;
        try { process.kill(pid, 'SIGKILL'); } catch (_) { /* gone or not ours */ }
      }
      if (alive === 0 && zombies === 0) return true;
      if (Date.now() >= deadline) return alive === 0;
      sleepMs(1);
    }
  }

  let spare = null;
  let spareSeq = 0;

  function spawnSpare() {
    ensureRunner();
    const stdinPath = `${ROOT}/stdin-${process.pid}-${++spareSeq}`;
    removeTree(stdinPath);
    const fd = fs.openSync(stdinPath, fs.constants.O_RDWR | fs.constants.O_CREAT |
      fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    fs.unlinkSync(stdinPath); // the spare's fd 0 keeps it; /dev/stdin still opens it
    let proc;
    try {
      proc = spawn(NODE_BIN, [RUNNER], {
        cwd: ROOT, env: CHILD_ENV, stdio: [fd, 'pipe', 'pipe', 'ipc'],
      });
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    const sp = { proc, pid: proc.pid, stdinFd: fd, alive: proc.pid !== undefined, job: null };
    if (!sp.alive) { // e.g. EAGAIN at the pids limit; 'error' follows
      fs.closeSync(fd);
      sp.stdinFd = null;
    }
    proc.on('error', (e) => {
      if (!sp.job) warn(`spare: ${e.message}`);
      sp.alive = false;
    });
    proc.stdout.on('error', () => {});
    proc.stderr.on('error', () => {});
    proc.on('exit', (code, sig) => {
      sp.alive = false;
      if (sp.job) {
        sp.job.onExit(code, sig);
      } else {
        proc.stdout.destroy();
        proc.stderr.destroy();
        if (sp.stdinFd !== null) { try { fs.closeSync(sp.stdinFd); } catch (_) { /* */ } sp.stdinFd = null; }
      }
    });
    return sp;
  }

  function trySpawnSpare() {
    try {
      spare = spawnSpare();
      if (!spare.alive) spare = null;
    } catch (e) {
      spare = null;
      warn(`cannot start a spare: ${e.message}`);
    }
  }

  function takeSpare() {
    if (!spare || !spare.alive || !spare.proc.connected) {
      if (spare && spare.alive) { try { spare.proc.kill('SIGKILL'); } catch (_) { /* */ } }
      const deadline = Date.now() + SWEEP_MS;
      for (;;) { // spawn fails with EAGAIN while killed processes still hold pids
        spare = spawnSpare();
        if (spare.alive || Date.now() >= deadline) break;
        sleepMs(20);
      }
      if (!spare.alive) throw new Error('cannot start node (pids limit?)');
    }
    const sp = spare;
    spare = null;
    return sp;
  }

  // ---------- one execution ----------
  function runJob(req) {
    const oomBefore = readOomKills();
    ensureRoot();
    removeTree(RUN_DIR);
    fs.mkdirSync(RUN_DIR, { mode: 0o700 });
    writeExclusive(MAIN, req.code);

    const sp = takeSpare();
    for (let off = 0; off < req.stdin.length;) {
      off += fs.writeSync(sp.stdinFd, req.stdin, off, req.stdin.length - off, off);
    }
    fs.closeSync(sp.stdinFd);
    sp.stdinFd = null;

    const proc = sp.proc;
    const out = [[], []];
    const outLen = [0, 0];
    let kept = 0;
    let truncated = false;
    let timedOut = false;
    let exited = false;
    let exitCode = null;
    let signal = null;
    let durationMs = 0;
    let clean = true;
    let open = 2;
    let drainTimer = null;
    let finished = false;

    const kill = () => {
      if (exited) return;
      try { process.kill(sp.pid, 'SIGKILL'); } catch (_) { /* already gone */ }
    };
    const onData = (which) => (chunk) => {
      if (truncated) return;
      const room = req.limit - kept;
      if (chunk.length > room) {
        if (room > 0) { out[which].push(chunk.subarray(0, room)); outLen[which] += room; kept += room; }
        truncated = true;
        kill();
        return;
      }
      out[which].push(chunk);
      outLen[which] += chunk.length;
      kept += chunk.length;
    };
    const onClosed = () => {
      open--;
      if (open === 0 && exited) finish();
    };
    for (const [which, stream] of [[0, proc.stdout], [1, proc.stderr]]) {
      let done = false;
      const once = () => { if (!done) { done = true; onClosed(); } };
      stream.on('data', onData(which));
      stream.on('end', once);
      stream.on('close', once);
    }

    const timer = setTimeout(() => { timedOut = true; kill(); },
      Math.min(MAX_TIMER_MS, Math.max(0, req.timeoutMs - msSince(req.t0))));

    sp.job = {
      onExit(code, sig) {
        exited = true;
        durationMs = Math.round(msSince(req.t0));
        clearTimeout(timer);
        exitCode = code;
        signal = sig ? (os.constants.signals[sig] || null) : null;
        const exempt = spare && spare.alive ? [spare.pid] : [];
        clean = IN_SANDBOX ? sweep(exempt) : true;
        if (open === 0) {
          finish();
        } else {
          drainTimer = setTimeout(() => {
            clean = false; // something still holds the pipes
            proc.stdout.destroy();
            proc.stderr.destroy();
            finish();
          }, DRAIN_GRACE_MS);
        }
      },
    };

    const job = { dir: RUN_DIR, main: MAIN };
    if (req.traceparent !== null) job.traceparent = req.traceparent;
    proc.send(job, (err) => {
      if (err && !exited) { warn(`cannot hand over the job: ${err.message}`); kill(); }
    });
    if (SPARE_EARLY) trySpawnSpare();

    function finish() {
      if (finished) return;
      finished = true;
      if (drainTimer) clearTimeout(drainTimer);
      proc.stdout.destroy();
      proc.stderr.destroy();
      const oomAfter = readOomKills();
      const oomKilled = oomBefore !== null && oomAfter !== null && oomAfter > oomBefore;
      const header = `{"id":${req.idText},"exit_code":${exitCode === null ? 'null' : exitCode},` +
        `"signal":${signal === null ? 'null' : signal},"timed_out":${timedOut},` +
        `"truncated":${truncated},"oom_killed":${oomKilled},"duration_ms":${durationMs},` +
        `"stdout_len":${outLen[0]},"stderr_len":${outLen[1]},"clean":${clean},` +
        `"start_ns":${req.startNs},"end_ns":${wallNs()}}\n`;
      const frame = Buffer.concat([Buffer.from(header), ...out[0], ...out[1]]);
      chanOut.write(frame, (err) => {
        if (err) fail(`writing a response: ${err.message}`);
        try { removeTree(RUN_DIR); } catch (e) { warn(`cannot remove ${RUN_DIR}: ${e.message}`); }
        if (!spare || !spare.alive) trySpawnSpare();
        busy = false;
        chanIn.resume();
        pump();
      });
    }
  }

  // ---------- start ----------
  chanOut.on('error', (e) => fail(`channel: ${e.message}`));
  chanIn.on('data', (chunk) => {
    q.chunks.push(chunk);
    q.len += chunk.length;
    if (busy) {
      if (q.len > STDIN_HIGH_WATER) chanIn.pause();
    } else {
      pump();
    }
  });
  chanIn.on('end', () => { eof = true; pump(); });
  chanIn.on('error', (e) => fail(`reading the channel: ${e.message}`));
  if (!IN_SANDBOX) warn('not PID 1 or its child: the sweep is limited to the run\'s own process');
  try {
    ensureRunner();
  } catch (e) {
    fail(`cannot prepare ${ROOT}: ${e.message}`);
  }
  trySpawnSpare();
}

module.exports = { session };
