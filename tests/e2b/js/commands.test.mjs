// sandbox.commands through the unmodified `e2b` SDK: run, its output and
// exit codes, CommandExitError, envs, cwd, user, streamed output callbacks,
// background commands, stdin, list and kill.

import assert from 'node:assert/strict'
import { after, afterEach, before, test } from 'node:test'

import { CommandExitError, InvalidArgumentError, Sandbox, SandboxError, TimeoutError } from 'e2b'

import { logOnFailure, startServer, stopServer } from './server.mjs'

const T = { timeout: 60_000 }

let server
let sbx
before(async () => {
  server = await startServer()
  sbx = await Sandbox.create({ timeoutMs: 300_000, metadata: { suite: 'e2b-js', file: 'commands' } })
}, { timeout: 90_000 })
afterEach((t) => logOnFailure(server, t))
after(async () => {
  try {
    if (sbx) await sbx.kill()
  } finally {
    await stopServer(server)
  }
}, { timeout: 90_000 })

test('run returns stdout, stderr and exitCode', T, async () => {
  const r = await sbx.commands.run('echo out; echo err >&2; printf "no newline"')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'out\nno newline')
  assert.equal(r.stderr, 'err\n')
  assert.equal(r.error, undefined)
})

test('run executes in bash as the default user, in its home', T, async () => {
  const r = await sbx.commands.run('echo "$BASH_VERSION" | cut -c1; whoami; pwd; echo $HOME')
  assert.match(r.stdout, /^\d\nuser\n\/home\/user\n\/home\/user\n$/)
})

test('a non-zero exit throws CommandExitError with exitCode, stdout and stderr', T, async () => {
  await assert.rejects(sbx.commands.run('echo partial; echo failing >&2; exit 7'), (e) => {
    assert.ok(e instanceof CommandExitError, `${e.name}: ${e.message}`)
    assert.ok(e instanceof SandboxError)
    assert.equal(e.name, 'CommandExitError')
    assert.equal(e.exitCode, 7)
    assert.equal(e.stdout, 'partial\n')
    assert.equal(e.stderr, 'failing\n')
    assert.match(e.message, /7/)
    return true
  })
  // A command that is not found is a non-zero exit too (bash: 127).
  await assert.rejects(sbx.commands.run('definitely-not-a-command-xyz'), (e) => {
    assert.ok(e instanceof CommandExitError, `${e.name}: ${e.message}`)
    assert.equal(e.exitCode, 127)
    assert.match(e.stderr, /definitely-not-a-command-xyz/)
    return true
  })
})

test('envs are set for that command only', T, async () => {
  const r = await sbx.commands.run('echo "$FOO|$BAR"', { envs: { FOO: 'a b', BAR: 'c=d' } })
  assert.equal(r.stdout, 'a b|c=d\n')
  const next = await sbx.commands.run('echo "${FOO-unset}"')
  assert.equal(next.stdout, 'unset\n')
})

test('cwd sets the working directory', T, async () => {
  assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
  await sbx.commands.run('mkdir -p /home/user/work/sub')
  assert.equal((await sbx.commands.run('pwd; ls', { cwd: '/home/user/work' })).stdout, '/home/user/work\nsub\n')
  await assert.rejects(sbx.commands.run('pwd', { cwd: '/no/such/dir' }), (e) => {
    assert.ok(e instanceof InvalidArgumentError || e instanceof SandboxError, `${e.name}: ${e.message}`)
    assert.ok(!(e instanceof CommandExitError), 'a missing cwd should fail the start, not the command')
    return true
  })
})

test('user: root runs as root', T, async () => {
  const r = await sbx.commands.run('id -u; whoami', { user: 'root' })
  assert.equal(r.stdout, '0\nroot\n')
})

test('onStdout and onStderr receive the output while the command runs', T, async () => {
  const out = []
  const err = []
  let firstOutAt = null
  const r = await sbx.commands.run('echo first; echo e1 >&2; sleep 1.5; echo second; echo e2 >&2', {
    onStdout: (data) => {
      if (firstOutAt === null) firstOutAt = Date.now()
      out.push(data)
    },
    onStderr: (data) => err.push(data),
  })
  const doneAt = Date.now()
  assert.equal(out.join(''), 'first\nsecond\n')
  assert.equal(err.join(''), 'e1\ne2\n')
  assert.equal(r.stdout, 'first\nsecond\n')
  assert.equal(r.stderr, 'e1\ne2\n')
  assert.ok(out.length >= 2, `stdout came in ${out.length} chunk(s), expected it streamed`)
  assert.ok(doneAt - firstOutAt >= 1_000, `first stdout arrived only ${doneAt - firstOutAt} ms before the end: not streamed`)
})

test('background: true returns a handle at once; wait() gives the result', T, async () => {
  const started = Date.now()
  const handle = await sbx.commands.run('sleep 1; echo done; echo bye >&2', { background: true })
  assert.ok(Date.now() - started < 1_000, 'run with background: true waited for the command')
  assert.equal(typeof handle.pid, 'number')
  assert.ok(handle.pid > 0)
  assert.equal(handle.exitCode, undefined)
  const result = await handle.wait()
  assert.equal(result.exitCode, 0)
  assert.equal(result.stdout, 'done\n')
  assert.equal(result.stderr, 'bye\n')
  assert.equal(handle.exitCode, 0)

  const failing = await sbx.commands.run('sleep 0.2; exit 3', { background: true })
  await assert.rejects(failing.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, `${e.name}: ${e.message}`)
    assert.equal(e.exitCode, 3)
    return true
  })
})

test('background output callbacks fire before wait()', T, async () => {
  const out = []
  const handle = await sbx.commands.run('echo early; sleep 30', { background: true, onStdout: (d) => out.push(d) })
  try {
    const deadline = Date.now() + 10_000
    while (out.join('') !== 'early\n' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(out.join(''), 'early\n')
    assert.equal(handle.stdout, 'early\n')
  } finally {
    await handle.kill()
  }
})

test('commands.list shows a running command and commands.kill(pid) kills it', T, async () => {
  const handle = await sbx.commands.run('sleep 600', { background: true })
  let killed = false
  try {
    const listed = await sbx.commands.list()
    const entry = listed.find((p) => p.pid === handle.pid)
    assert.ok(entry, `pid ${handle.pid} not in ${JSON.stringify(listed)}`)
    assert.deepEqual(entry.args.slice(-1), ['sleep 600'])

    assert.equal(await sbx.commands.kill(handle.pid), true)
    killed = true
    await assert.rejects(handle.wait(), (e) => {
      assert.ok(e instanceof CommandExitError, `${e.name}: ${e.message}`)
      assert.notEqual(e.exitCode, 0)
      return true
    })
    const after = await sbx.commands.list()
    assert.ok(!after.some((p) => p.pid === handle.pid), `killed pid ${handle.pid} still listed`)
    // Nothing left to kill.
    assert.equal(await sbx.commands.kill(handle.pid), false)
    // The process is really gone from the sandbox.
    const ps = await sbx.commands.run('ps -eo args')
    assert.ok(!ps.stdout.split('\n').some((l) => l.trim() === 'sleep 600'), ps.stdout)
  } finally {
    if (!killed) await sbx.commands.kill(handle.pid)
  }
})

test('handle.kill() kills its command', T, async () => {
  const handle = await sbx.commands.run('sleep 600', { background: true })
  assert.equal(await handle.kill(), true)
  await assert.rejects(handle.wait(), CommandExitError)
})

test('stdin: sendStdin and closeStdin feed a background command', T, async () => {
  const handle = await sbx.commands.run('cat; echo end', { background: true, stdin: true })
  await sbx.commands.sendStdin(handle.pid, 'line one\n')
  await handle.sendStdin(new TextEncoder().encode('line two\n'))
  await handle.closeStdin()
  const result = await handle.wait()
  assert.equal(result.stdout, 'line one\nline two\nend\n')
})

test('timeoutMs ends a command that runs too long with TimeoutError', T, async () => {
  const started = Date.now()
  await assert.rejects(sbx.commands.run('sleep 20', { timeoutMs: 1_000 }), (e) => {
    assert.ok(e instanceof TimeoutError, `${e.name}: ${e.message}`)
    return true
  })
  assert.ok(Date.now() - started < 10_000, 'the command was not cut off at its timeout')
})

test('large output arrives whole', T, async () => {
  const r = await sbx.commands.run('seq 1 200000')
  const lines = r.stdout.split('\n')
  assert.equal(lines.length, 200001)
  assert.equal(lines[0], '1')
  assert.equal(lines[199999], '200000')
})
