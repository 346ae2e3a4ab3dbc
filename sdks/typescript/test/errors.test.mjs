// Each error kind the server reports maps onto its class, with kind, code,
// data and message; transport problems have their own classes.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';

import {
  AlreadyExistsError,
  CapsuleClient,
  CapsuleConnectionError,
  CapsuleError,
  CapsuleTimeoutError,
  ERROR_CLASSES,
  FileNotFoundInSandboxError,
  InvalidParamsError,
  IsADirectoryInSandboxError,
  NotADirectoryInSandboxError,
  OperationTimeoutError,
  PathOutsideSandboxError,
  PayloadTooLargeError,
  PermissionDeniedError,
  ProtocolError,
  QuotaExceededError,
  SandboxExpiredError,
  SandboxNotFoundError,
  TemplateNotFoundError,
  TemplateUnavailableError,
  UnsupportedError,
  errorFromPayload,
} from '../dist/index.js';
import { CapsuleServer, freePort } from './helpers/server.mjs';

const MAX_REQUEST_BYTES = 4 << 20;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server;
let client;
let capsule;

before(async () => {
  server = await new CapsuleServer({ args: ['--max-request-bytes', String(MAX_REQUEST_BYTES)] }).start();
  client = new CapsuleClient({ baseUrl: server.url });
  capsule = await client.create();
});

after(async () => {
  await server?.stop();
});

/** Asserts `promise` rejects with exactly `cls`, the given kind and code; returns the error. */
async function rejectsWith(promise, cls, kind, code) {
  let caught;
  await assert.rejects(promise, (e) => {
    caught = e;
    return true;
  });
  assert.equal(caught.constructor, cls, `${caught.name}: ${caught.message}`);
  assert.ok(caught instanceof CapsuleError);
  assert.ok(caught instanceof Error);
  assert.equal(caught.name, cls.name);
  assert.equal(caught.kind, kind);
  assert.equal(caught.code, code);
  assert.equal(caught.data.kind, kind);
  assert.ok(caught.message.length > 0);
  return caught;
}

describe('errors', () => {
  it('sandbox_not_found', async () => {
    const e = await rejectsWith(client.get('zzzzzzzz'), SandboxNotFoundError, 'sandbox_not_found', -32001);
    assert.equal(e.data.id, 'zzzzzzzz');
    assert.match(e.message, /zzzzzzzz/);
  });

  it('operations on a deleted sandbox', async () => {
    const c = await client.create();
    await c.delete();
    for (const call of [
      () => c.exec('true'),
      () => c.run('true'),
      () => c.readFile('x'),
      () => c.writeFile('x', 'y'),
      () => c.listDir(),
      () => c.setTimeout(60_000),
      () => c.info(),
    ]) {
      await assert.rejects(call(), SandboxNotFoundError);
    }
  });

  it('sandbox_expired', async () => {
    const c = await client.create({ ttlMs: 1000 });
    await sleep(2500);
    const e = await rejectsWith(c.exec(['true']), SandboxExpiredError, 'sandbox_expired', -32002);
    assert.match(e.message, new RegExp(c.id));
    await assert.rejects(client.get(c.id), SandboxExpiredError);
    assert.ok(!(await client.list()).some((s) => s.id === c.id));
  });

  it('invalid_params', async () => {
    const e = await rejectsWith(client.create({ ttlMs: 5 }), InvalidParamsError, 'invalid_params', -32602);
    assert.match(e.message, /5/);
    await assert.rejects(client.create({ cpu: 0 }), InvalidParamsError);
    await assert.rejects(client.create({ memoryMb: 1 }), InvalidParamsError);
    await assert.rejects(capsule.exec(['true'], { cwd: '/nope' }), (err) => err instanceof InvalidParamsError && err.message.includes('/nope'));
    await assert.rejects(capsule.exec(['true'], { timeoutMs: 0 }), InvalidParamsError);
    await assert.rejects(capsule.exec([]), InvalidParamsError);
    await assert.rejects(capsule.writeFile('f', 'x', { mode: '999' }), /mode/);
    await assert.rejects(client.get('../../x'), InvalidParamsError);
    await assert.rejects(client.call('create', { tll_ms: 5 }), (err) => err instanceof InvalidParamsError && err.message.includes('tll_ms'));
  });

  it('protocol errors', async () => {
    await rejectsWith(client.call('sandbox.v1.nope'), ProtocolError, 'method_not_found', -32601);
    const wrong = new CapsuleClient({ baseUrl: `${server.url}/not-capsule` });
    await assert.rejects(wrong.templates(), (e) => e instanceof ProtocolError && /HTTP 404/.test(e.message));
  });

  it('template errors', async () => {
    const e = await rejectsWith(client.create({ template: 'cobol' }), TemplateNotFoundError, 'template_not_found', -32004);
    assert.match(e.message, /cobol/);
    const unavailable = (await client.templates()).filter((t) => !t.available);
    if (unavailable.length > 0) {
      await rejectsWith(client.create({ template: unavailable[0].name }), TemplateUnavailableError, 'template_unavailable', -32005);
    }
  });

  it('unsupported', async () => {
    await rejectsWith(client.create({ network: 'host' }), UnsupportedError, 'unsupported', -32016);
  });

  it('file errors', async () => {
    const e = await rejectsWith(capsule.readFile('/workspace/nope.txt'), FileNotFoundInSandboxError, 'file_not_found', -32006);
    assert.equal(e.data.path, '/workspace/nope.txt');
    await assert.rejects(capsule.stat('nope'), FileNotFoundInSandboxError);
    await rejectsWith(capsule.readFile('/etc/../../../etc/shadow'), PathOutsideSandboxError, 'path_outside_sandbox', -32007);
    await capsule.writeFile('f.txt', 'x');
    await rejectsWith(capsule.listDir('f.txt'), NotADirectoryInSandboxError, 'not_a_directory', -32008);
    await rejectsWith(capsule.readFile('/workspace'), IsADirectoryInSandboxError, 'is_a_directory', -32009);
    await capsule.makeDir('d');
    await rejectsWith(capsule.makeDir('d'), AlreadyExistsError, 'already_exists', -32010);
    await rejectsWith(capsule.writeFile('/etc/motd', 'x'), PermissionDeniedError, 'permission_denied', -32011);
  });

  it('payload_too_large, and the client stays usable', async () => {
    const big = new Uint8Array(MAX_REQUEST_BYTES); // base64 makes it 4/3 larger than the limit
    const e = await rejectsWith(capsule.writeFile('big.bin', big), PayloadTooLargeError, 'payload_too_large', -32012);
    assert.equal(e.data.limit, MAX_REQUEST_BYTES);
    for (let i = 0; i < 5; i++) {
      await assert.rejects(capsule.writeFile('big.bin', big), PayloadTooLargeError);
      assert.equal((await capsule.exec(`echo fine ${i}`)).stdout, `fine ${i}\n`);
    }
  });

  it('quota_exceeded', async () => {
    const small = await new CapsuleServer({ args: ['--max-sandboxes', '1'] }).start();
    try {
      const c = new CapsuleClient({ baseUrl: small.url });
      const first = await c.create();
      await rejectsWith(c.create(), QuotaExceededError, 'quota_exceeded', -32013);
      await first.delete();
    } finally {
      await small.stop();
    }
  });

  it('a refused connection is a clear error', async () => {
    const port = await freePort();
    const c = new CapsuleClient({ baseUrl: `http://127.0.0.1:${port}` });
    await assert.rejects(c.templates(), (err) => {
      assert.ok(err instanceof CapsuleConnectionError, String(err));
      assert.ok(err.message.startsWith(`cannot reach the Capsule server at http://127.0.0.1:${port}`), err.message);
      assert.match(err.message, /ECONNREFUSED/);
      assert.equal(err.kind, undefined);
      return true;
    });
  });

  it('a silent server is a timeout error', async () => {
    const sockets = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const c = new CapsuleClient({ baseUrl: `http://127.0.0.1:${silent.address().port}`, timeoutMs: 500 });
      const started = Date.now();
      await assert.rejects(c.list(), (err) => {
        assert.ok(err instanceof CapsuleTimeoutError, String(err));
        assert.match(err.message, /did not answer sandbox\.v1\.list within 500 ms/);
        return true;
      });
      assert.ok(Date.now() - started < 10_000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('a call timeout shorter than the command', async () => {
    await assert.rejects(client.call('exec', { id: capsule.id, cmd: 'sleep 5' }, { timeoutMs: 500 }), CapsuleTimeoutError);
  });

  it('decodes unknown kinds and bare codes', () => {
    const unknown = errorFromPayload({ code: -32099, message: 'new thing', data: { kind: 'brand_new' } });
    assert.equal(unknown.constructor, CapsuleError);
    assert.equal(unknown.kind, 'brand_new');
    const byCode = errorFromPayload({ code: -32001, message: 'gone' });
    assert.ok(byCode instanceof SandboxNotFoundError);
    assert.equal(byCode.kind, 'sandbox_not_found');
    assert.ok(errorFromPayload('garbage') instanceof ProtocolError);
    // Inherited object keys are not kinds.
    assert.equal(errorFromPayload({ code: 1, message: 'x', data: { kind: 'toString' } }).constructor, CapsuleError);
  });

  it('has a class for every documented kind', () => {
    const kinds = `parse_error invalid_request method_not_found invalid_params internal sandbox_not_found
      sandbox_expired sandbox_not_running template_not_found template_unavailable file_not_found
      path_outside_sandbox not_a_directory is_a_directory already_exists permission_denied
      payload_too_large quota_exceeded unauthorized timeout unsupported unavailable`.split(/\s+/);
    assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), kinds.sort());
    for (const kind of kinds) assert.ok(ERROR_CLASSES[kind].prototype instanceof CapsuleError, kind);
    assert.equal(ERROR_CLASSES.timeout, OperationTimeoutError);
  });
});
