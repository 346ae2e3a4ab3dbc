// Sandbox lifecycle through the unmodified `e2b` SDK: create (default and
// named templates) with timeoutMs, envs and metadata; list, getInfo,
// connect, isRunning, setTimeout, kill; API key authentication.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, afterEach, before, test } from 'node:test'

import { AuthenticationError, Sandbox, SandboxError, SandboxNotFoundError, TimeoutError } from 'e2b'

import { logOnFailure, startServer, stopServer } from './server.mjs'

const T = { timeout: 90_000 }
const RUN = randomBytes(6).toString('hex')
const WRONG_KEY = `e2b_${'0'.repeat(40)}`

let server
before(async () => {
  server = await startServer()
}, { timeout: 90_000 })
afterEach((t) => logOnFailure(server, t))
after(() => stopServer(server), { timeout: 90_000 })

/** All sandboxes the server lists, every page. */
async function listAll(opts) {
  const paginator = Sandbox.list(opts)
  const all = []
  while (paginator.hasNext) all.push(...(await paginator.nextItems()))
  return all
}

test('Sandbox.create() starts the default template with timeoutMs, envs and metadata', T, async () => {
  const metadata = { suite: 'e2b-js', run: RUN, case: 'default' }
  const before = Date.now()
  const sbx = await Sandbox.create({ timeoutMs: 120_000, envs: { X: 'from-create', Y: 'two words' }, metadata })
  try {
    assert.equal(typeof sbx.sandboxId, 'string')
    assert.ok(sbx.sandboxId.length > 0, 'sandboxId is empty')

    const r = await sbx.commands.run('echo $X; echo "$Y"')
    assert.equal(r.stdout, 'from-create\ntwo words\n')
    assert.equal(r.exitCode, 0)

    assert.equal(await sbx.isRunning(), true)

    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.ok([info.templateId, info.name].includes('base'), `template of ${JSON.stringify(info)} is not base`)
    assert.deepEqual(info.metadata, metadata)
    assert.equal(info.state, 'running')
    const lifetime = info.endAt.getTime() - info.startedAt.getTime()
    assert.ok(Math.abs(lifetime - 120_000) <= 2_000, `endAt - startedAt is ${lifetime} ms, expected ~120000`)
    assert.ok(Math.abs(info.startedAt.getTime() - before) <= 5_000, `startedAt ${info.startedAt.toISOString()} is not now`)

    // The static form gives the same.
    const again = await Sandbox.getInfo(sbx.sandboxId)
    assert.deepEqual(again.metadata, metadata)
  } finally {
    await sbx.kill()
  }
})

test('Sandbox.create(name) starts a named template (python)', T, async () => {
  const sbx = await Sandbox.create('python', { timeoutMs: 60_000, envs: { X: 'py' }, metadata: { run: RUN, case: 'python' } })
  try {
    assert.ok(sbx.sandboxId.length > 0)
    const info = await sbx.getInfo()
    assert.ok([info.templateId, info.name].includes('python'), `template of ${JSON.stringify(info)} is not python`)
    const r = await sbx.commands.run(`python3 -c 'import os, sys; print(os.environ["X"], sys.version_info[0])'`)
    assert.equal(r.stdout, 'py 3\n')
    // The python template's own environment, which base does not set.
    assert.equal((await sbx.commands.run('echo "$PYTHONUNBUFFERED"')).stdout, '1\n')
    // Listing by template.
    const metadata = { run: RUN, case: 'python' }
    assert.deepEqual((await listAll({ query: { template: 'python', metadata } })).map((s) => s.sandboxId), [sbx.sandboxId])
    assert.deepEqual(await listAll({ query: { template: 'base', metadata } }), [])
  } finally {
    await sbx.kill()
  }
})

test('Sandbox.create with an unknown template fails and creates nothing', T, async () => {
  const metadata = { run: RUN, case: 'unknown-template' }
  await assert.rejects(Sandbox.create('no-such-template-' + RUN, { timeoutMs: 30_000, metadata }), (e) => {
    assert.ok(e instanceof SandboxError, `${e.name}: ${e.message}`)
    assert.match(e.message, /404|not found/i)
    return true
  })
  assert.deepEqual(await listAll({ query: { metadata } }), [])
})

test('Sandbox.list() shows running sandboxes with their metadata and filters on it', T, async () => {
  const a = await Sandbox.create({ timeoutMs: 60_000, metadata: { run: RUN, case: 'list', which: 'a' } })
  try {
    const b = await Sandbox.create({ timeoutMs: 60_000, metadata: { run: RUN, case: 'list', which: 'b c/d&e=f' } })
    try {
      const all = await listAll()
      const ids = all.map((s) => s.sandboxId)
      assert.ok(ids.includes(a.sandboxId) && ids.includes(b.sandboxId), `list ${JSON.stringify(ids)} misses a or b`)
      const listedA = all.find((s) => s.sandboxId === a.sandboxId)
      assert.deepEqual(listedA.metadata, { run: RUN, case: 'list', which: 'a' })
      assert.equal(listedA.state, 'running')
      assert.ok(listedA.endAt > listedA.startedAt)

      const onlyB = await listAll({ query: { metadata: { run: RUN, which: 'b c/d&e=f' } } })
      assert.deepEqual(onlyB.map((s) => s.sandboxId), [b.sandboxId])
      const both = await listAll({ query: { metadata: { run: RUN, case: 'list' } } })
      assert.deepEqual(both.map((s) => s.sandboxId).sort(), [a.sandboxId, b.sandboxId].sort())
      assert.deepEqual(await listAll({ query: { metadata: { run: RUN, case: 'nothing-has-this' } } }), [])

      // Pagination: one per page still yields both.
      const paged = await listAll({ query: { metadata: { run: RUN, case: 'list' } }, limit: 1 })
      assert.deepEqual(paged.map((s) => s.sandboxId).sort(), [a.sandboxId, b.sandboxId].sort())
    } finally {
      await b.kill()
    }
  } finally {
    await a.kill()
  }
})

test('Sandbox.connect(id) gives a working handle on the same sandbox', T, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000, envs: { X: 'same' }, metadata: { run: RUN, case: 'connect' } })
  try {
    const other = await Sandbox.connect(sbx.sandboxId)
    assert.equal(other.sandboxId, sbx.sandboxId)
    assert.equal(await other.isRunning(), true)
    assert.equal((await other.commands.run('echo $X')).stdout, 'same\n')
    // State made through one handle is seen through the other.
    await sbx.commands.run('echo marker-$RANDOM > /tmp/marker')
    const mine = (await sbx.commands.run('cat /tmp/marker')).stdout
    assert.match(mine, /^marker-\d+\n$/)
    assert.equal((await other.commands.run('cat /tmp/marker')).stdout, mine)
    assert.deepEqual((await other.getInfo()).metadata, { run: RUN, case: 'connect' })
  } finally {
    await sbx.kill()
  }
})

test('setTimeout moves the end of life', T, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 30_000, metadata: { run: RUN, case: 'timeout' } })
  try {
    const first = await sbx.getInfo()
    assert.ok(Math.abs(first.endAt.getTime() - first.startedAt.getTime() - 30_000) <= 2_000)
    await sbx.setTimeout(300_000)
    const later = await sbx.getInfo()
    const expected = Date.now() + 300_000
    assert.ok(Math.abs(later.endAt.getTime() - expected) <= 5_000, `endAt ${later.endAt.toISOString()}, expected ~${new Date(expected).toISOString()}`)
    assert.equal(await sbx.isRunning(), true)
  } finally {
    await sbx.kill()
  }
})

test('a sandbox past its timeoutMs is gone', T, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 2_000, metadata: { run: RUN, case: 'expiry' } })
  try {
    assert.equal(await sbx.isRunning(), true)
    const deadline = Date.now() + 20_000
    while ((await sbx.isRunning()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
    assert.equal(await sbx.isRunning(), false, 'still running 20 s after a 2 s timeout')
    await assert.rejects(sbx.getInfo(), SandboxNotFoundError)
  } finally {
    await sbx.kill()
  }
})

test('kill() ends the sandbox: isRunning() is false and calls on it fail with the SDK errors', T, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { run: RUN, case: 'kill' } })
  let killed = false
  try {
    assert.equal(await sbx.isRunning(), true)
    assert.equal(await sbx.kill(), true)
    killed = true
    assert.equal(await sbx.isRunning(), false)

    await assert.rejects(sbx.commands.run('echo hi'), (e) => {
      assert.ok(e instanceof SandboxNotFoundError, `${e.name}: ${e.message}`)
      return true
    })
    await assert.rejects(sbx.getInfo(), (e) => {
      assert.ok(e instanceof SandboxNotFoundError, `${e.name}: ${e.message}`)
      assert.match(e.message, new RegExp(sbx.sandboxId))
      return true
    })
    await assert.rejects(Sandbox.connect(sbx.sandboxId), SandboxNotFoundError)
    // envd HTTP calls on a gone sandbox get E2B's 502, which this SDK reports as a TimeoutError.
    await assert.rejects(sbx.files.read('/etc/hostname'), (e) => {
      assert.ok(e instanceof TimeoutError, `${e.name}: ${e.message}`)
      assert.match(e.message, /was not found/)
      return true
    })
    // Killing again reports that there was nothing to kill.
    assert.equal(await sbx.kill(), false)
    assert.equal(await Sandbox.kill(sbx.sandboxId), false)
    const ids = (await listAll()).map((s) => s.sandboxId)
    assert.ok(!ids.includes(sbx.sandboxId), 'a killed sandbox is still listed')
  } finally {
    if (!killed) await sbx.kill()
  }
})

test('Sandbox.kill(id) kills by id', T, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { run: RUN, case: 'kill-by-id' } })
  try {
    assert.equal(await Sandbox.kill(sbx.sandboxId), true)
    assert.equal(await sbx.isRunning(), false)
  } finally {
    await sbx.kill()
  }
})

test('a wrong API key is rejected with AuthenticationError', T, async () => {
  const metadata = { run: RUN, case: 'auth' }
  await assert.rejects(Sandbox.create({ apiKey: WRONG_KEY, timeoutMs: 30_000, metadata }), (e) => {
    assert.ok(e instanceof AuthenticationError, `${e.name}: ${e.message}`)
    return true
  })
  await assert.rejects(Sandbox.list({ apiKey: WRONG_KEY }).nextItems(), AuthenticationError)
  // Nothing was created by the refused call.
  assert.deepEqual(await listAll({ query: { metadata } }), [])

  // A running sandbox cannot be reached, listed or killed with the wrong key either.
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata })
  try {
    await assert.rejects(Sandbox.connect(sbx.sandboxId, { apiKey: WRONG_KEY }), AuthenticationError)
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, { apiKey: WRONG_KEY }), AuthenticationError)
    await assert.rejects(Sandbox.kill(sbx.sandboxId, { apiKey: WRONG_KEY }), AuthenticationError)
    assert.equal(await sbx.isRunning(), true)
  } finally {
    await sbx.kill()
  }
})
