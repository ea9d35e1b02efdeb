// souq-shim (node), mode "serve": one long-lived instance of a deployed handler.
//
// The shim connects to the agent's Unix socket (argv[3]). Every header is one
// line of JSON (at most 4096 bytes with its newline) followed by exactly the
// bytes its length names:
//   agent -> shim, once: {"v":1,"op":"load","code_len":N,"output_limit":L}\n + handler.js
//   shim -> agent, once: {"ready":true}\n, or {"ready":false,"error_len":N}\n + the
//                        error, after which the shim exits 0
//   agent -> shim, many: {"id":I,"len":N[,"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"]}\n
//                        + the event as JSON (pipelining allowed)
//   shim -> agent, one per request, in order:
//                        {"id":I,"type":"json"|"text"|"error","len":N,"start_ns":S,"end_ns":E}\n
//                        + N bytes
// Other header keys are ignored; so is the traceparent (the handler is not traced).
// S and E are the shim's wall clock (Unix epoch nanoseconds, exact integers) when
// the request began to run (its whole frame was read by then) and when its answer
// was ready.
// handler.js sets exports.handler = (async) (event) => value. The value is sent
// as JSON ("json"; undefined counts as null), else as String(value) ("text"); a
// throw or rejection as "name: message" ("error", its stack goes to stderr). An
// answer over L bytes becomes an "error". Requests run one at a time, in order;
// an uncaught exception or unhandled rejection while a request is pending
// becomes that request's error. The answers to the requests of one read go out
// in one write. EOF between requests: exit 0 once all are answered;
// malformed header or short read: exit 70. stdout and stderr are the handler's
// own (the agent's log); no frame is ever written there.
'use strict';
const fs = require('fs');
const net = require('net');
const Module = require('module');

const MAX_HEADER = 4096; // header line including its newline
const MAX_ERROR = 65536;
const MAX_QUEUED = 4096; // stop reading while this many requests wait
const FILENAME = '/tmp/handler.js';
const SAFE_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' };
const U64_MAX = (1n << 64n) - 1n;
const NULL = Buffer.from('null');

function fail(reason, status = 70) {
  try { fs.writeSync(2, `souq-shim: ${reason}\n`); } catch (_) { /* nothing left */ }
  process.exit(status);
}

// Stacks and messages name handler.js and end at its last frame: the frames below it
// are the shim's and node's, as are the module loader's.
function readable(text) {
  const lines = String(text).split(FILENAME).join('handler.js').split('\n')
    .filter((l) => !/^\s+at .*[( ]node:internal\/modules\//.test(l));
  let last = -1;
  lines.forEach((l, i) => { if (l.trim() && (!/^\s+at /.test(l) || l.includes('handler.js'))) last = i; });
  return lines.slice(0, last + 1).join('\n').trimEnd();
}

const { wallNs } = require('./clock.js');

function log(text) {
  try { process.stderr.write(`${text}\n`); } catch (_) { /* the log is gone */ }
}

function isErrorLike(e) {
  return e instanceof Error ||
    (e !== null && typeof e === 'object' && typeof e.name === 'string' && typeof e.message === 'string');
}

// The handler function, or a string saying why it cannot be loaded.
function load(code) {
  const m = new Module(FILENAME, null);
  m.filename = FILENAME;
  m.paths = Module._nodeModulePaths('/tmp');
  try {
    m._compile(code.toString('utf8'), FILENAME);
  } catch (e) {
    try {
      return readable(isErrorLike(e) && e.stack ? e.stack : `Uncaught ${String(e)}`);
    } catch (_) {
      return 'handler.js threw an unprintable value while loading';
    }
  }
  m.loaded = true;
  require.cache[FILENAME] = m;
  const fn = m.exports === null || m.exports === undefined ? undefined : m.exports.handler;
  if (typeof fn !== 'function') {
    return `handler.js does not export a function handler (exports.handler is ${fn === null ? 'null' : typeof fn})`;
  }
  return fn;
}

function errorAnswer(e) {
  let msg;
  try {
    if (isErrorLike(e)) {
      msg = e.message ? `${e.name}: ${e.message}` : e.name;
      log(readable(e.stack || msg));
    } else {
      msg = String(e);
      log(`Uncaught ${readable(msg)}`);
    }
  } catch (_) {
    msg = 'an unprintable value was thrown';
  }
  return ['error', Buffer.from(msg)];
}

function valueAnswer(v) {
  if (v === undefined) return ['json', NULL];
  let s;
  try { s = JSON.stringify(v); } catch (_) { /* not serialisable (BigInt, cycles, a throwing toJSON) */ }
  if (s !== undefined) return ['json', Buffer.from(s)];
  try { return ['text', Buffer.from(String(v))]; } catch (e) { return errorAnswer(e); }
}

function parseHeader(text) {
  let h;
  try { h = JSON.parse(text); } catch (e) { fail(`malformed header: ${e.message}`); }
  if (h === null || typeof h !== 'object' || Array.isArray(h)) fail('malformed header: not an object');
  return h;
}

function count(h, key) {
  if (!Number.isSafeInteger(h[key]) || h[key] < 0) fail(`malformed header: ${key} must be a non-negative integer`);
  return h[key];
}

// The id's digits as sent: a u64 past 2^53 must not be rounded.
function idText(h, text) {
  if (Number.isSafeInteger(h.id) && h.id >= 0) return String(h.id);
  const m = /"id"\s*:\s*([0-9]+)\s*[,}]/.exec(text);
  if (m && BigInt(m[1]) <= U64_MAX && Number(m[1]) === h.id) return m[1];
  return fail('malformed header: id must be an integer in 0..2^64-1');
}

function serve(path) {
  if (!path) fail('serve needs the socket path as its second argument');
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, SAFE_ENV);
  process.chdir('/tmp');

  // allowHalfOpen: the agent may shut down its side and still read the last answers.
  const sock = net.connect({ path, allowHalfOpen: true });
  let chunks = []; // unparsed input
  let have = 0;
  let hdr = null; // the header whose body is still arriving
  let handler = null;
  let limit = 0;
  let eof = false;
  const queue = []; // requests not yet run: {id, event} or {id, bad}
  let head = 0;
  let current = null; // the request whose promise is pending
  const out = [];
  let flushQueued = false;
  let writeBlocked = false;

  function flush() {
    flushQueued = false;
    if (out.length === 0) return;
    const data = out.length === 1 ? out[0] : Buffer.concat(out);
    out.length = 0;
    if (!sock.write(data)) { writeBlocked = true; sock.pause(); }
  }

  function answer(job, [type, data]) {
    if (data.length > limit) {
      type = 'error';
      data = Buffer.from(`the handler's answer is ${data.length} bytes, over the limit of ${limit} bytes`);
    }
    out.push(Buffer.from(`{"id":${job.id},"type":"${type}","len":${data.length},` +
      `"start_ns":${job.startNs},"end_ns":${wallNs()}}\n`), data);
  }

  function settle(job, value, thrown) {
    if (current !== job) return; // already answered (e.g. by an uncaught exception)
    current = null;
    answer(job, thrown ? errorAnswer(value) : valueAnswer(value));
    run();
  }

  // Runs the queued requests in order; a pending promise pauses it until it settles.
  // The answers go out when the queue is empty, or, while a promise is pending, at the
  // next turn of the event loop (the promise may wait for a timer or I/O).
  function run() {
    while (current === null && head < queue.length) {
      const job = queue[head];
      queue[head++] = undefined;
      job.startNs = wallNs();
      if (job.bad) { answer(job, ['error', Buffer.from(job.bad)]); continue; }
      try {
        const v = handler(job.event);
        if (v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function') {
          current = job;
          v.then((r) => settle(job, r, false), (e) => settle(job, e, true));
          if (out.length > 0 && !flushQueued) { flushQueued = true; setImmediate(flush); }
        } else {
          answer(job, valueAnswer(v));
        }
      } catch (e) {
        if (current === job) current = null;
        answer(job, errorAnswer(e));
      }
    }
    if (current !== null) return;
    queue.length = 0;
    head = 0;
    flush();
    if (eof) {
      sock.end(() => process.exit(0));
    } else if (!writeBlocked) {
      sock.resume();
    }
  }

  function onLoad(h, body) {
    limit = h.output_limit;
    const loaded = load(body);
    if (typeof loaded === 'function') {
      handler = loaded;
      out.push(Buffer.from('{"ready":true}\n')); // sent by run()
      return true;
    }
    let err = Buffer.from(loaded);
    if (err.length > MAX_ERROR) err = Buffer.from(err.subarray(0, MAX_ERROR).toString('utf8').replace(/\uFFFD$/, ''));
    sock.pause();
    sock.end(Buffer.concat([Buffer.from(`{"ready":false,"error_len":${err.length}}\n`), err]), () => process.exit(0));
    return false;
  }

  function onData(chunk) {
    chunks.push(chunk);
    have += chunk.length;
    if (hdr !== null && have < hdr.len) return; // a large body: concat once it is all here
    const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
    let off = 0;
    for (;;) {
      if (hdr === null) {
        const nl = buf.indexOf(10, off);
        if (nl < 0 || nl - off >= MAX_HEADER) {
          if (buf.length - off >= MAX_HEADER) fail(`header line longer than ${MAX_HEADER} bytes`);
          break;
        }
        const text = buf.toString('utf8', off, nl);
        const h = parseHeader(text);
        if (handler === null) {
          if (h.v !== 1 || h.op !== 'load') fail('malformed header: expected {"v":1,"op":"load",...}');
          count(h, 'output_limit');
          hdr = { load: h, len: count(h, 'code_len') };
        } else {
          hdr = { id: idText(h, text), len: count(h, 'len') };
        }
        off = nl + 1;
      }
      if (buf.length - off < hdr.len) break;
      const body = buf.subarray(off, off + hdr.len);
      off += hdr.len;
      const h = hdr;
      hdr = null;
      if (h.load) {
        if (!onLoad(h.load, body)) return;
        continue;
      }
      try {
        queue.push({ id: h.id, event: JSON.parse(body.toString('utf8')) });
      } catch (e) {
        queue.push({ id: h.id, bad: `souq-shim: the event is not valid JSON: ${e.message}` });
      }
    }
    const rest = buf.subarray(off);
    chunks = rest.length ? [rest] : [];
    have = rest.length;
    if (queue.length - head > MAX_QUEUED) sock.pause();
    run();
  }

  sock.on('data', onData);
  sock.on('end', () => {
    eof = true;
    if (have > 0) fail(hdr ? `short read in body: got ${have} of ${hdr.len} bytes` : 'short read in header');
    if (handler === null) fail('EOF before the load frame', 0);
    run();
  });
  sock.on('drain', () => { writeBlocked = false; if (current === null) run(); });
  sock.on('error', (e) => fail(`channel: ${e.message}`, e.code === 'EPIPE' || e.code === 'ECONNRESET' ? 0 : 70));

  // A callback of the handler that throws, or a promise nobody awaits that rejects:
  // the pending request's error if there is one, else only a log line.
  const stray = (e) => {
    if (current !== null) settle(current, e, true);
    else log(`souq-shim: outside any request: ${readable(isErrorLike(e) && e.stack ? e.stack : String(e))}`);
  };
  process.on('uncaughtException', stray);
  process.on('unhandledRejection', stray);
}

module.exports = { serve };
