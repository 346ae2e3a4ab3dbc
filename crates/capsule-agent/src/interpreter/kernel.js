// Capsule JavaScript kernel: notebook-style, stateful code execution on plain Node (20+).
//
// Started by the agent as `node -e "<this file>"`. Protocol:
//   fd 0  requests, one JSON object per line: {"id": N, "code": "...", "env_vars": {...}}
//   fd 1  the user's stdout, fd 2 the user's stderr (raw, shared with child processes);
//         after each execution both get the end marker "\x1ecapsule-end-<id>\x1e\n"
//   fd 3  events, one JSON object per line: ready, result, error, done
//
// Cells run in the main context, so their globals persist and everything Node offers
// (require, process, Buffer, timers, fetch...) is there. They are evaluated through the
// built-in inspector's `Runtime.evaluate` in "REPL mode", the mode behind the DevTools
// console: it supports top-level `await`, keeps top-level let/const/class declarations
// across cells (and allows re-running a cell that declares them), and returns the
// cell's completion value. Without an inspector (a build without it) cells run as plain
// scripts through `vm`: no top-level await and no re-declaration there.

(() => {
  'use strict';
  const fs = require('fs');
  const net = require('net');
  const readline = require('readline');
  const { Writable } = require('stream');
  const util = require('util');
  const vm = require('vm');
  const stringify = JSON.stringify; // captured: user code may replace globals

  // --- file descriptors ---------------------------------------------------------------
  // Node cannot dup2 or clear close-on-exec, but re-opening /proc/self/fd/N gives a new
  // close-on-exec descriptor for the same pipe. That keeps the event pipe out of child
  // processes, and lets us hand fd 0 over to /dev/null so that user code (or a child
  // with inherited stdio) does not read the protocol's request lines.
  const reopen = (fd, flags) => { try { return fs.openSync(`/proc/self/fd/${fd}`, flags); } catch { return -1; } };
  let EVENTS = reopen(3, fs.constants.O_WRONLY);
  if (EVENTS >= 0) fs.closeSync(3); else EVENTS = 3;
  let requestFd = reopen(0, fs.constants.O_RDONLY);
  if (requestFd >= 0) {
    fs.closeSync(0);
    const nul = fs.openSync('/dev/null', 'r'); // the lowest free descriptor: 0
    if (nul !== 0) fs.closeSync(nul);
  }

  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  function writeSome(fd, buf, off) {
    try {
      return fs.writeSync(fd, buf, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e; // someone made the pipe non-blocking
      Atomics.wait(sleeper, 0, 0, 1);
      return 0;
    }
  }
  function writeAll(fd, data) {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length;) off += writeSome(fd, buf, off);
  }

  // process.stdout/stderr become plain synchronous writes to fds 1 and 2 (replacing Node's
  // libuv streams before anything uses them). Nothing is ever left buffered, so the end
  // marker cannot overtake output; the pipes stay blocking for child processes; and an
  // interrupt, which terminates JavaScript wherever it is, cannot leave a stream's
  // internal state stuck half-way through a write.
  for (const [name, fd] of [['stdout', 1], ['stderr', 2]]) {
    const stream = new Writable({ write: (chunk, _, cb) => { writeAll(fd, chunk); cb(); } });
    stream.write = (chunk, encoding, cb) => {
      if (typeof chunk === 'string') chunk = Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8');
      writeAll(fd, chunk);
      cb = typeof encoding === 'function' ? encoding : cb;
      if (typeof cb === 'function') process.nextTick(cb);
      return true;
    };
    stream.fd = fd;
    Object.defineProperty(process, name, { value: stream, configurable: true, enumerable: true, writable: true });
  }

  // Lone surrogates would make the JSON unreadable for strict parsers: replace them.
  const wellFormed = (k, v) => (typeof v === 'string' && v.toWellFormed ? v.toWellFormed() : v);
  // An interrupt stops JavaScript wherever it is: even in the middle of an event line
  // (one too long for a single write). `cutShort` records that; see evaluate().
  let cutShort = false;
  const emit = (event) => {
    const line = Buffer.from(stringify(event, wellFormed) + '\n');
    for (let off = 0; off < line.length;) {
      off += writeSome(EVENTS, line, off);
      cutShort = off > 0 && off < line.length;
    }
  };

  // --- rich results -------------------------------------------------------------------
  const FORMATS = [ // [event key, method name, binary?]
    ['html', '_repr_html_'], ['markdown', '_repr_markdown_'], ['svg', '_repr_svg_'],
    ['png', '_repr_png_', true], ['jpeg', '_repr_jpeg_', true], ['pdf', '_repr_pdf_', true],
    ['latex', '_repr_latex_'], ['json', '_repr_json_'], ['javascript', '_repr_javascript_'],
  ];
  const RAW = Symbol('capsule.raw'); // marks objects made by display.html() & co.

  function resultEvent(value, main) {
    const event = { type: 'result', is_main_result: main, text: util.inspect(value) };
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return event;
    const raw = value[RAW];
    if (raw) return Object.assign(event, raw);
    for (const [key, method, binary] of FORMATS) {
      try {
        if (typeof value[method] !== 'function') continue;
        const data = value[method]();
        if (data === undefined || data === null) continue;
        if (binary) event[key] = typeof data === 'string' ? data : Buffer.from(data).toString('base64');
        else if (key === 'json') { if (stringify(data) !== undefined) event.json = data; }
        else event[key] = String(data);
      } catch (e) {
        process.stderr.write(`capsule: ${method}() failed: ${e}\n`);
      }
    }
    return event;
  }

  function display(...values) {
    for (const v of values) emit(resultEvent(v, false));
  }
  // display.html('<b>hi</b>'), display.png(buffer) ...: show data in one format.
  for (const [key, , binary] of FORMATS) {
    display[key] = (data) => {
      if (binary && typeof data !== 'string') data = Buffer.from(data).toString('base64');
      display({ [RAW]: { text: `<${key}>`, [key]: data }, [util.inspect.custom]: () => `<${key}>` });
    };
  }
  Object.defineProperty(globalThis, 'display', { value: display, writable: true, configurable: true });

  // --- evaluation ---------------------------------------------------------------------
  class Interrupted extends Error {}
  Interrupted.prototype.name = 'KeyboardInterrupt';

  let session = null;
  try {
    const inspector = require('inspector');
    session = new inspector.Session();
    session.connect();
  } catch {
    session = null;
  }
  const GROUP = 'capsule';
  const post = (method, params) => {
    let out;
    session.post(method, params, (err, res) => { out = err ? { err } : { res }; });
    return out; // calls without awaitPromise answer synchronously
  };
  // Turn an inspector RemoteObject back into the real value (same process, same heap).
  function fromRemote(ro) {
    if (!ro || ro.type === 'undefined') return undefined;
    if (ro.objectId) {
      let got;
      const hook = Symbol.for('capsule.sink');
      globalThis[hook] = (v) => { got = v; };
      try {
        post('Runtime.callFunctionOn', {
          objectId: ro.objectId,
          functionDeclaration: `function () { 'use strict'; globalThis[Symbol.for('capsule.sink')](this); }`,
        });
      } finally {
        delete globalThis[hook];
      }
      return got;
    }
    if ('value' in ro) return ro.value;
    const u = ro.unserializableValue; // NaN, -0, Infinity, 123n
    return u && u.endsWith('n') ? BigInt(u.slice(0, -1)) : Number(u);
  }

  // Everything in here runs under `breakOnSigint`: a SIGINT terminates synchronous
  // user code (even `while (true) {}`) with ERR_SCRIPT_EXECUTION_INTERRUPTED.
  const START = Symbol.for('capsule.start');
  const starter = new vm.Script(`globalThis[Symbol.for('capsule.start')]()`, { filename: '[capsule]' });

  // Resolves to {threw, value, details}; rejects only with Interrupted (or a kernel bug).
  function evaluate(code) {
    return new Promise((resolve, reject) => {
      globalThis[START] = () => {
        if (!session) return resolve({ threw: false, value: vm.runInThisContext(code, { filename: '<cell>' }) });
        const params = {
          expression: `${code}\n//# sourceURL=<cell>`, replMode: true, awaitPromise: true, objectGroup: GROUP,
        };
        session.post('Runtime.evaluate', params, (err, res) => {
          if (err) return reject(err);
          try {
            const d = res.exceptionDetails;
            if (d) resolve({ threw: true, value: d.exception ? fromRemote(d.exception) : new Error(d.text), details: d });
            else resolve({ threw: false, value: fromRemote(res.result) });
          } catch (e) {
            reject(e);
          }
        });
      };
      try {
        starter.runInThisContext({ breakOnSigint: true });
      } catch (e) {
        if (e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
          if (cutShort) writeAll(EVENTS, '\n'); // end the line display() left unfinished
          cutShort = false;
          reject(new Interrupted('execution interrupted (SIGINT)'));
        }
        else if (!session) resolve({ threw: true, value: e });
        else reject(e);
      } finally {
        delete globalThis[START];
      }
    });
  }

  function errorEvent(e, details, code) {
    const safe = (f, dflt) => { try { return f(); } catch { return dflt; } };
    if (!(e instanceof Error) && !(e && typeof e === 'object' && typeof e.message === 'string')) {
      const value = safe(() => String(e), util.inspect(e));
      return { type: 'error', name: 'Error', value, traceback: `Uncaught ${safe(() => util.inspect(e), value)}` };
    }
    const name = safe(() => String(e.name), 'Error');
    const value = safe(() => String(e.message), '');
    let lines = String(safe(() => e.stack, '') || `${name}: ${value}`).split('\n');
    // Drop kernel frames: everything from the inspector/vm call down, and our own code.
    const cut = lines.findIndex((l) => /^\s+at .*(node:inspector|node:vm|\[capsule\])/.test(l));
    if (cut >= 0) lines = lines.slice(0, cut);
    lines = lines.filter((l) => !/^\s+at .*\[eval\]/.test(l));
    if (details && !lines.some((l) => l.includes('<cell>:'))) { // a syntax error: say where
      const line = details.lineNumber + 1;
      const last = code.split('\n').length; // past it: the end of input (our sourceURL line)
      lines.push(line > last ? `    at <cell>:${last}` : `    at <cell>:${line}:${details.columnNumber + 1}`);
    }
    return { type: 'error', name, value, traceback: lines.join('\n') };
  }

  // --- the request loop ---------------------------------------------------------------
  let executionCount = 0;
  let current = null; // {interrupt} while an execution runs

  // SIGINT must stop synchronous code (`while (true) {}`) as well as awaited work, and
  // never kill the kernel. Only Node's SIGINT watchdog (vm's `breakOnSigint`) can stop
  // synchronous code, but a SIGINT arriving as the script ends, while that watchdog shuts
  // down, is silently lost. Like Node's REPL, we keep the watchdog running the whole time
  // (through the `contextify` binding): SIGINTs outside scripts are then recorded as
  // pending, never fatal, and we poll for them while an execution awaits. Where that
  // binding is gone, a plain SIGINT listener does, with the small window described.
  let watchdog = null;
  const quiet = process.noDeprecation;
  try {
    process.noDeprecation = true; // (process.binding is deprecated)
    const c = process.binding('contextify');
    if (typeof c.stopSigintWatchdog === 'function' && c.startSigintWatchdog()) watchdog = c;
  } catch {
    watchdog = null;
  } finally {
    process.noDeprecation = quiet;
  }
  // True if a SIGINT arrived since the last call; nested start/stop reads and clears it.
  const takeSigint = () => watchdog.startSigintWatchdog() && watchdog.stopSigintWatchdog();
  if (!watchdog) process.on('SIGINT', () => { if (current) current.interrupt(); }); // idle: ignored
  // Errors from stray callbacks/promises must not kill the kernel: report on stderr.
  const report = (e) => {
    const { traceback } = errorEvent(e);
    process.stderr.write(`${traceback.startsWith('Uncaught') ? '' : 'Uncaught '}${traceback}\n`);
  };
  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);

  async function execute(code) {
    let interrupt;
    const interrupted = new Promise((_, reject) => { interrupt = reject; });
    current = { interrupt: () => interrupt(new Interrupted('execution interrupted (SIGINT)')) };
    if (watchdog) takeSigint(); // forget SIGINTs that came while idle
    const poll = watchdog && setInterval(() => { if (takeSigint()) current.interrupt(); }, 20);
    try {
      const r = await Promise.race([evaluate(code), interrupted]);
      if (r.threw) return emit(errorEvent(r.value, r.details, code));
      let value = r.value;
      if (value instanceof Promise) value = await Promise.race([value, interrupted]);
      if (value !== undefined) emit(resultEvent(value, true));
    } catch (e) {
      emit(e instanceof Interrupted ? { type: 'error', name: e.name, value: e.message, traceback: `${e.name}: ${e.message}` } : errorEvent(e));
    } finally {
      clearInterval(poll);
      current = null;
      if (session) post('Runtime.releaseObjectGroup', { objectGroup: GROUP });
    }
  }

  async function finish(id) {
    await new Promise((res) => setImmediate(res)); // let due rejections be reported first
    const marker = `\x1ecapsule-end-${id}\x1e\n`;
    for (const fd of [1, 2]) { try { writeAll(fd, marker); } catch { /* user closed it */ } }
    emit({ type: 'done', id, execution_count: executionCount });
  }

  async function protocolError(message, id) {
    emit({ type: 'error', name: 'ProtocolError', value: message, traceback: `ProtocolError: ${message}` });
    if (id !== undefined) await finish(id);
  }

  async function handle(line) {
    let req;
    try { req = JSON.parse(line); } catch (e) { return protocolError(`malformed request (not JSON): ${e.message}`); }
    const id = req && typeof req === 'object' ? req.id : undefined;
    if (!Number.isSafeInteger(id)) return protocolError('request must be a JSON object with an integer "id"');
    const env = req.env_vars == null ? {} : req.env_vars;
    if (typeof req.code !== 'string') return protocolError('request field "code" must be a string', id);
    if (typeof env !== 'object' || Array.isArray(env) || Object.values(env).some((v) => v !== null && typeof v !== 'string')) {
      return protocolError('request field "env_vars" must map names to strings', id);
    }
    executionCount += 1;
    const saved = Object.keys(env).map((k) => [k, process.env[k]]);
    const setEnv = (k, v) => { if (v == null) delete process.env[k]; else process.env[k] = v; };
    try {
      for (const [k, v] of Object.entries(env)) setEnv(k, v);
      await execute(req.code);
    } finally {
      for (const [k, v] of saved) setEnv(k, v);
    }
    await finish(id);
  }

  // Requests are handled one at a time, in order; EOF ends the kernel once idle.
  const queue = [];
  let busy = false;
  let eof = false;
  async function pump() {
    if (busy) return;
    busy = true;
    while (queue.length) {
      try { await handle(queue.shift()); } catch (e) { process.stderr.write(`capsule kernel: ${util.inspect(e)}\n`); }
    }
    busy = false;
    if (eof) process.exit(0);
  }

  let input = process.stdin;
  if (requestFd >= 0) {
    const st = fs.fstatSync(requestFd);
    input = st.isFIFO() || st.isSocket()
      ? new net.Socket({ fd: requestFd, readable: true, writable: false })
      : fs.createReadStream(null, { fd: requestFd });
  }
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  rl.on('line', (line) => { if (line.trim()) { queue.push(line); pump(); } });
  rl.on('close', () => { eof = true; pump(); });
  emit({ type: 'ready', language: 'javascript' });
})();
