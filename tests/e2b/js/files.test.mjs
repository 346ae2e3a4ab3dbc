// sandbox.files through the unmodified `e2b` SDK: write (text, bytes,
// several files), read (text, bytes, blob), list, exists, getInfo, remove,
// makeDir, rename, and their not-found errors.
//
// Fixtures for the tests that are not about `write` are made with shell
// commands, so that each test measures one operation.

import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, afterEach, before, test } from 'node:test'

import { FileNotFoundError, NotFoundError, Sandbox } from 'e2b'

import { logOnFailure, startServer, stopServer } from './server.mjs'

const T = { timeout: 60_000 }
const HOME = '/home/user'

let server
let sbx
let n = 0
/** A fresh directory in the sandbox for one test. */
async function scratch() {
  const dir = `${HOME}/t${++n}`
  await sbx.commands.run(`mkdir -p ${dir}`)
  return dir
}
const sh = async (cmd) => (await sbx.commands.run(cmd)).stdout
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

/** Every byte value, plus sequences that are not valid UTF-8. */
function awkwardBytes() {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i)
  const invalid = Uint8Array.from([0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28, 0xbc, 0x80, 0x00, 0x0d, 0x0a, 0x0d])
  const out = new Uint8Array(all.length * 2 + invalid.length)
  out.set(all, 0)
  out.set(invalid, all.length)
  out.set(all.reverse(), all.length + invalid.length)
  return out
}

before(async () => {
  server = await startServer()
  sbx = await Sandbox.create({ timeoutMs: 300_000, metadata: { suite: 'e2b-js', file: 'files' } })
}, { timeout: 90_000 })
afterEach((t) => logOnFailure(server, t))
after(async () => {
  try {
    if (sbx) await sbx.kill()
  } finally {
    await stopServer(server)
  }
}, { timeout: 90_000 })

test('write text, read it back as text and from the shell', T, async () => {
  const dir = await scratch()
  const text = 'héllo wörld ✓ 🚀\nsecond line\n'
  const info = await sbx.files.write(`${dir}/hello.txt`, text)
  assert.equal(info.name, 'hello.txt')
  assert.equal(info.path, `${dir}/hello.txt`)
  assert.equal(info.type, 'file')
  assert.equal(await sbx.files.read(`${dir}/hello.txt`), text)
  assert.equal(await sh(`cat ${dir}/hello.txt`), text)
  // Written as the default user, like E2B.
  assert.equal(await sh(`stat -c %U ${dir}/hello.txt`), 'user\n')
})

test('write overwrites and truncates an existing file', T, async () => {
  const dir = await scratch()
  await sh(`printf 'a much longer original content' > ${dir}/f`)
  await sbx.files.write(`${dir}/f`, 'short')
  assert.equal(await sbx.files.read(`${dir}/f`), 'short')
})

test('write Uint8Array bytes (all values, invalid UTF-8) round-trips byte for byte', T, async () => {
  const dir = await scratch()
  const bytes = awkwardBytes()
  await sbx.files.write(`${dir}/bytes.bin`, bytes)
  const back = await sbx.files.read(`${dir}/bytes.bin`, { format: 'bytes' })
  assert.ok(back instanceof Uint8Array, `read bytes gave ${Object.prototype.toString.call(back)}`)
  assert.deepEqual(Buffer.from(back), Buffer.from(bytes))
  // And what is on disk is exactly that.
  assert.equal(await sh(`wc -c < ${dir}/bytes.bin`), `${bytes.length}\n`)
  assert.equal(await sh(`sha256sum ${dir}/bytes.bin | cut -d' ' -f1`), `${sha256(bytes)}\n`)
})

test('write an ArrayBuffer and a Blob', T, async () => {
  const dir = await scratch()
  const bytes = awkwardBytes()
  await sbx.files.write(`${dir}/buffer.bin`, bytes.slice().buffer)
  assert.equal(await sh(`sha256sum ${dir}/buffer.bin | cut -d' ' -f1`), `${sha256(bytes)}\n`)
  await sbx.files.write(`${dir}/blob.bin`, new Blob([bytes]))
  assert.deepEqual(Buffer.from(await sbx.files.read(`${dir}/blob.bin`, { format: 'bytes' })), Buffer.from(bytes))
})

test('write with useOctetStream (raw body upload) round-trips bytes', T, async () => {
  const dir = await scratch()
  const bytes = awkwardBytes()
  const info = await sbx.files.write(`${dir}/raw.bin`, bytes, { useOctetStream: true })
  assert.equal(info.path, `${dir}/raw.bin`)
  assert.equal(await sh(`sha256sum ${dir}/raw.bin | cut -d' ' -f1`), `${sha256(bytes)}\n`)
})

test('read bytes written by the shell (not UTF-8) exactly; as text they decode lossily', T, async () => {
  const dir = await scratch()
  await sh(`printf '\\xff\\xfe\\x00A\\xc3\\x28\\n' > ${dir}/raw`)
  const bytes = await sbx.files.read(`${dir}/raw`, { format: 'bytes' })
  assert.deepEqual([...bytes], [0xff, 0xfe, 0x00, 0x41, 0xc3, 0x28, 0x0a])
  const blob = await sbx.files.read(`${dir}/raw`, { format: 'blob' })
  assert.deepEqual([...new Uint8Array(await blob.arrayBuffer())], [0xff, 0xfe, 0x00, 0x41, 0xc3, 0x28, 0x0a])
})

test('a larger file (5 MiB of random bytes) round-trips', T, async () => {
  const dir = await scratch()
  const bytes = new Uint8Array(5 << 20)
  for (let off = 0; off < bytes.length; off += 65536) crypto.getRandomValues(bytes.subarray(off, off + 65536))
  await sbx.files.write(`${dir}/big.bin`, bytes)
  assert.equal(await sh(`sha256sum ${dir}/big.bin | cut -d' ' -f1`), `${sha256(bytes)}\n`)
  const back = await sbx.files.read(`${dir}/big.bin`, { format: 'bytes' })
  assert.equal(back.length, bytes.length)
  assert.equal(sha256(back), sha256(bytes))
})

test('write and read an empty file', T, async () => {
  const dir = await scratch()
  await sbx.files.write(`${dir}/empty`, '')
  assert.equal(await sh(`wc -c < ${dir}/empty`), '0\n')
  assert.equal(await sbx.files.read(`${dir}/empty`), '')
  assert.equal((await sbx.files.read(`${dir}/empty`, { format: 'bytes' })).length, 0)
})

test('write creates missing parent directories; relative paths are in the home directory', T, async () => {
  const dir = await scratch()
  await sbx.files.write(`${dir}/a/b/c.txt`, 'deep')
  assert.equal(await sh(`cat ${dir}/a/b/c.txt`), 'deep')
  const rel = `${dir.slice(HOME.length + 1)}/relative.txt`
  const info = await sbx.files.write(rel, 'rel')
  assert.equal(info.path, `${dir}/relative.txt`)
  assert.equal(await sh(`cat ${dir}/relative.txt`), 'rel')
})

test('write several files in one call', T, async () => {
  const dir = await scratch()
  const infos = await sbx.files.write([
    { path: `${dir}/one.txt`, data: 'one' },
    { path: `${dir}/two.bin`, data: new Uint8Array([0, 255, 1]) },
  ])
  assert.deepEqual(infos.map((i) => i.path).sort(), [`${dir}/one.txt`, `${dir}/two.bin`])
  assert.equal(await sh(`cat ${dir}/one.txt`), 'one')
  assert.equal(await sh(`od -An -tu1 ${dir}/two.bin | tr -s ' '`), ' 0 255 1\n')
})

test('many consecutive small writes all succeed', T, async () => {
  const dir = await scratch()
  const failures = []
  for (let i = 0; i < 200; i++) {
    const data = i % 4 < 2 ? '' : i % 4 === 2 ? `n${i}` : 'x'.repeat(1024)
    try {
      await sbx.files.write(`${dir}/w${i}`, data)
    } catch (e) {
      failures.push(`write #${i} (${data.length} bytes): ${e.name}: ${e.message.slice(0, 60)}`)
    }
  }
  assert.deepEqual(failures, [])
  assert.equal(await sh(`ls ${dir} | wc -l`), '200\n')
})

test('read of a missing file throws FileNotFoundError', T, async () => {
  const dir = await scratch()
  await assert.rejects(sbx.files.read(`${dir}/missing.txt`), (e) => {
    assert.ok(e instanceof FileNotFoundError, `${e.name}: ${e.message}`)
    assert.ok(e instanceof NotFoundError)
    return true
  })
})

test('list shows names, paths, types and sizes; depth goes deeper', T, async () => {
  const dir = await scratch()
  await sh(`mkdir -p ${dir}/sub/inner && printf 'abc' > ${dir}/a.txt && printf '12345' > ${dir}/sub/b.txt`)
  const entries = await sbx.files.list(dir)
  const byName = Object.fromEntries(entries.map((e) => [e.name, e]))
  assert.deepEqual(Object.keys(byName).sort(), ['a.txt', 'sub'])
  assert.equal(byName['a.txt'].type, 'file')
  assert.equal(byName['a.txt'].path, `${dir}/a.txt`)
  assert.equal(byName['a.txt'].size, 3)
  assert.equal(byName['a.txt'].owner, 'user')
  assert.equal(byName['a.txt'].permissions, '-rw-r--r--')
  assert.ok(byName['a.txt'].modifiedTime instanceof Date && Math.abs(byName['a.txt'].modifiedTime - Date.now()) < 60_000)
  assert.equal(byName['sub'].type, 'dir')
  assert.equal(byName['sub'].path, `${dir}/sub`)

  const deep = await sbx.files.list(dir, { depth: 2 })
  const paths = deep.map((e) => e.path).sort()
  assert.deepEqual(paths, [`${dir}/a.txt`, `${dir}/sub`, `${dir}/sub/b.txt`, `${dir}/sub/inner`])
  assert.equal(deep.find((e) => e.name === 'b.txt').size, 5)

  await assert.rejects(sbx.files.list(`${dir}/missing`), FileNotFoundError)
})

test('a symlink is described as envd does: its target resolved to an absolute path, the type of its target', T, async () => {
  const dir = await scratch()
  await sh(`mkdir ${dir}/d && printf 'abc' > ${dir}/a.txt && ln -s a.txt ${dir}/link && ln -s d ${dir}/dirlink`)
  const byName = Object.fromEntries((await sbx.files.list(dir)).map((e) => [e.name, e]))
  assert.equal(byName['link'].type, 'file')
  assert.equal(byName['link'].path, `${dir}/link`)
  assert.equal(byName['link'].symlinkTarget, `${dir}/a.txt`)
  assert.equal(byName['dirlink'].type, 'dir')
  assert.equal(byName['dirlink'].symlinkTarget, `${dir}/d`)
  assert.equal(byName['a.txt'].symlinkTarget, undefined)
  assert.equal((await sbx.files.getInfo(`${dir}/link`)).symlinkTarget, `${dir}/a.txt`)
})

test('exists and getInfo tell files, directories and missing paths apart', T, async () => {
  const dir = await scratch()
  await sh(`mkdir ${dir}/d && printf 'xy' > ${dir}/f`)
  assert.equal(await sbx.files.exists(`${dir}/f`), true)
  assert.equal(await sbx.files.exists(`${dir}/d`), true)
  assert.equal(await sbx.files.exists(`${dir}/nope`), false)
  const info = await sbx.files.getInfo(`${dir}/f`)
  assert.equal(info.type, 'file')
  assert.equal(info.size, 2)
  assert.equal(info.name, 'f')
  assert.equal((await sbx.files.getInfo(`${dir}/d`)).type, 'dir')
  await assert.rejects(sbx.files.getInfo(`${dir}/nope`), FileNotFoundError)
})

test('makeDir creates parents, and answers false when the directory exists', T, async () => {
  const dir = await scratch()
  assert.equal(await sbx.files.makeDir(`${dir}/x/y/z`), true)
  assert.equal(await sh(`test -d ${dir}/x/y/z && stat -c %U ${dir}/x/y/z`), 'user\n')
  assert.equal(await sbx.files.makeDir(`${dir}/x/y/z`), false)
})

test('remove deletes a file and a whole directory; a missing path is FileNotFoundError', T, async () => {
  const dir = await scratch()
  await sh(`mkdir -p ${dir}/d/e && touch ${dir}/d/e/f ${dir}/g`)
  await sbx.files.remove(`${dir}/g`)
  assert.equal(await sh(`test -e ${dir}/g && echo there || echo gone`), 'gone\n')
  await sbx.files.remove(`${dir}/d`)
  assert.equal(await sh(`test -e ${dir}/d && echo there || echo gone`), 'gone\n')
  assert.equal(await sbx.files.exists(`${dir}/d`), false)
  await assert.rejects(sbx.files.remove(`${dir}/never`), FileNotFoundError)
})

test('rename moves a file and a directory', T, async () => {
  const dir = await scratch()
  await sh(`printf 'moved' > ${dir}/old.txt && mkdir -p ${dir}/olddir && touch ${dir}/olddir/inside`)
  const info = await sbx.files.rename(`${dir}/old.txt`, `${dir}/new.txt`)
  assert.equal(info.path, `${dir}/new.txt`)
  assert.equal(info.name, 'new.txt')
  assert.equal(info.type, 'file')
  assert.equal(await sbx.files.exists(`${dir}/old.txt`), false)
  assert.equal(await sh(`cat ${dir}/new.txt`), 'moved')

  const d = await sbx.files.rename(`${dir}/olddir`, `${dir}/newdir`)
  assert.equal(d.type, 'dir')
  assert.equal(await sh(`ls ${dir}/newdir`), 'inside\n')
  await assert.rejects(sbx.files.rename(`${dir}/not-there`, `${dir}/x`), FileNotFoundError)
})
