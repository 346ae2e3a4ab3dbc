// The unmodified `@e2b/code-interpreter` SDK: runCode with state kept
// between runs, output logs and callbacks, errors, code contexts in Python,
// JavaScript and bash, envs and timeouts.

import assert from 'node:assert/strict'
import { after, afterEach, before, test } from 'node:test'

import { NotFoundError, Sandbox, TimeoutError } from '@e2b/code-interpreter'

import { logOnFailure, startServer, stopServer } from './server.mjs'

const T = { timeout: 60_000 }

let server
let sbx
before(async () => {
  server = await startServer()
  // No template given: the code interpreter SDK's own default.
  sbx = await Sandbox.create({ timeoutMs: 300_000, envs: { FROM_CREATE: 'yes' }, metadata: { suite: 'e2b-js', file: 'code-interpreter' } })
}, { timeout: 90_000 })
afterEach((t) => logOnFailure(server, t))
after(async () => {
  try {
    if (sbx) await sbx.kill()
  } finally {
    await stopServer(server)
  }
}, { timeout: 90_000 })

test('the SDK default template is code-interpreter-v1', T, async () => {
  assert.equal(Sandbox.defaultTemplate, 'code-interpreter-v1')
  const info = await sbx.getInfo()
  assert.ok([info.templateId, info.name].includes('code-interpreter-v1'), `template of ${JSON.stringify(info)}`)
  assert.equal(await sbx.isRunning(), true)
})

test('runCode keeps state: x = 41, then x + 1 is 42', T, async () => {
  const first = await sbx.runCode('x = 41')
  assert.equal(first.error, undefined)
  assert.deepEqual(first.results, [])
  assert.equal(first.text, undefined)
  const second = await sbx.runCode('x + 1')
  assert.equal(second.error, undefined)
  assert.equal(second.text, '42')
  assert.equal(second.results.length, 1)
  assert.equal(second.results[0].isMainResult, true)
  assert.equal(second.results[0].text, '42')
  assert.ok(second.executionCount > first.executionCount, `executionCount ${first.executionCount} then ${second.executionCount}`)
})

test('print goes to logs.stdout and onStdout; stderr to logs.stderr and onStderr; the value to onResult', T, async () => {
  const out = []
  const err = []
  const results = []
  const execution = await sbx.runCode('import sys\nprint("hello")\nprint("héllo ✓")\nprint("warn", file=sys.stderr)\n6 * 7', {
    onStdout: (m) => out.push(m),
    onStderr: (m) => err.push(m),
    onResult: (r) => results.push(r),
  })
  assert.equal(execution.error, undefined)
  assert.equal(execution.logs.stdout.join(''), 'hello\nhéllo ✓\n')
  assert.equal(execution.logs.stderr.join(''), 'warn\n')
  assert.equal(out.map((m) => m.line).join(''), 'hello\nhéllo ✓\n')
  assert.ok(out.every((m) => m.error === false && typeof m.timestamp === 'number'))
  assert.equal(err.map((m) => m.line).join(''), 'warn\n')
  assert.ok(err.every((m) => m.error === true))
  assert.equal(execution.text, '42')
  assert.deepEqual(results.map((r) => r.text), ['42'])
})

test('onStdout is called while the code runs, not at the end', T, async () => {
  let firstAt = null
  const execution = await sbx.runCode('import time\nprint("early", flush=True)\ntime.sleep(1.5)\nprint("late")', {
    onStdout: () => {
      if (firstAt === null) firstAt = Date.now()
    },
  })
  const doneAt = Date.now()
  assert.equal(execution.logs.stdout.join(''), 'early\nlate\n')
  assert.ok(firstAt !== null && doneAt - firstAt >= 1_000, `first stdout came ${doneAt - firstAt} ms before the end`)
})

test('1/0 gives execution.error ZeroDivisionError with value and traceback', T, async () => {
  const errors = []
  const execution = await sbx.runCode('y = 10\n1/0', { onError: (e) => errors.push(e) })
  assert.ok(execution.error, 'no execution.error')
  assert.equal(execution.error.name, 'ZeroDivisionError')
  assert.match(execution.error.value, /division by zero/)
  assert.equal(typeof execution.error.traceback, 'string')
  assert.match(execution.error.traceback, /ZeroDivisionError/)
  assert.match(execution.error.traceback, /1\/0/)
  assert.deepEqual(execution.results, [])
  assert.deepEqual(errors.map((e) => e.name), ['ZeroDivisionError'])
  // The statements before the error ran, and the kernel lives on.
  assert.equal((await sbx.runCode('y')).text, '10')
})

test('other Python errors: SyntaxError, NameError, a raised ValueError', T, async () => {
  const syntax = await sbx.runCode('def (')
  assert.equal(syntax.error?.name, 'SyntaxError')
  const name = await sbx.runCode('undefined_name_xyz')
  assert.equal(name.error?.name, 'NameError')
  assert.match(name.error.value, /undefined_name_xyz/)
  const raised = await sbx.runCode('raise ValueError("bad value")')
  assert.equal(raised.error?.name, 'ValueError')
  assert.equal(raised.error.value, 'bad value')
})

test('a JavaScript context: let a = 5; a * 3 is 15, and a is kept for the next run', T, async () => {
  const ctx = await sbx.createCodeContext({ language: 'javascript' })
  assert.equal(typeof ctx.id, 'string')
  assert.ok(ctx.id.length > 0)
  assert.equal(ctx.language, 'javascript')
  const first = await sbx.runCode('let a = 5; a * 3', { context: ctx })
  assert.equal(first.error, undefined)
  assert.equal(first.text, '15')
  const second = await sbx.runCode('a + 1', { context: ctx })
  assert.equal(second.error, undefined)
  assert.equal(second.text, '6')
  const logged = await sbx.runCode('console.log("from js"); a', { context: ctx })
  assert.equal(logged.logs.stdout.join(''), 'from js\n')
  assert.equal(logged.text, '5')
  const thrown = await sbx.runCode('throw new TypeError("nope")', { context: ctx })
  assert.equal(thrown.error?.name, 'TypeError')
  assert.equal(thrown.error.value, 'nope')
  // Contexts do not share state: Python's default context has no `a`.
  const py = await sbx.runCode('a')
  assert.equal(py.error?.name, 'NameError')
})

test("language: 'bash' runs shell code; its state is kept", T, async () => {
  const home = await sbx.runCode('echo $HOME', { language: 'bash' })
  assert.equal(home.error, undefined)
  assert.equal(home.logs.stdout.join(''), '/home/user\n')
  await sbx.runCode('export KEPT=seven', { language: 'bash' })
  const kept = await sbx.runCode('echo $KEPT; whoami', { language: 'bash' })
  assert.equal(kept.logs.stdout.join(''), 'seven\nuser\n')
})

test('a Python context with its own cwd and state; list and remove contexts', T, async () => {
  const ctx = await sbx.createCodeContext({ language: 'python', cwd: '/tmp' })
  assert.equal(ctx.language, 'python')
  assert.equal(ctx.cwd, '/tmp')
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, "'/tmp'")
  await sbx.runCode('only_here = 1', { context: ctx })
  assert.equal((await sbx.runCode('only_here', { context: ctx })).text, '1')
  assert.equal((await sbx.runCode('only_here')).error?.name, 'NameError')

  const listed = await sbx.listCodeContexts()
  assert.ok(listed.some((c) => c.id === ctx.id && c.language === 'python'), JSON.stringify(listed))
  await sbx.removeCodeContext(ctx)
  assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
  // (A short requestTimeoutMs: on an HTTP error runCode leaves its request timer
  // running, which would keep this process alive for the default 60 s.)
  await assert.rejects(sbx.runCode('1', { context: ctx, requestTimeoutMs: 5_000 }), NotFoundError)
})

test('envs: the sandbox environment, and per-run envs for that run only', T, async () => {
  const run = await sbx.runCode('import os; (os.environ.get("FROM_CREATE"), os.environ.get("PER_RUN"))', { envs: { PER_RUN: 'one' } })
  assert.equal(run.text, "('yes', 'one')")
  const next = await sbx.runCode('import os; repr(os.environ.get("PER_RUN"))')
  assert.equal(next.text, "'None'")
})

test('timeoutMs ends a long run with TimeoutError; the sandbox still runs code', T, async () => {
  const started = Date.now()
  await assert.rejects(sbx.runCode('import time; time.sleep(30)', { timeoutMs: 1_000 }), TimeoutError)
  assert.ok(Date.now() - started < 10_000)
  const ctx = await sbx.createCodeContext({ language: 'python' })
  assert.equal((await sbx.runCode('2 + 2', { context: ctx })).text, '4')
})
