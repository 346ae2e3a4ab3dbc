// Every method of the client against a real server and real sandboxes.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Capsule, CapsuleClient, SandboxExpiredError, SandboxNotFoundError, VERSION } from '../dist/index.js';
import { CapsuleServer, withSandbox } from './helpers/server.mjs';

const OUTPUT_LIMIT = 64 << 10;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server;
let client;

before(async () => {
  server = await new CapsuleServer({ args: ['--output-limit', String(OUTPUT_LIMIT)] }).start();
  client = new CapsuleClient({ baseUrl: server.url });
});

after(async () => {
  await server?.stop();
});

/** Runs `fn` with a fresh sandbox and deletes it afterwards. */
const withCapsule = (options, fn) => withSandbox(client, options, fn);

describe('client', () => {
  it('reports health', async () => {
    const h = await client.health();
    assert.equal(h.status, 'ok');
    assert.equal(h.backend, 'native');
    assert.equal(typeof h.version, 'string');
  });

  it('lists templates', async () => {
    const templates = Object.fromEntries((await client.templates()).map((t) => [t.name, t]));
    assert.deepEqual(templates.base.run, ['sh', '-c']);
    assert.deepEqual(templates.python.run, ['python3', '-c']);
    assert.deepEqual(templates.node.run, ['node', '-e']);
    for (const name of ['base', 'python', 'node']) {
      assert.equal(templates[name].available, true);
      assert.ok(templates[name].description.length > 0);
    }
    if (!templates.go.available) assert.match(templates.go.reason, /go/);
  });

  it('creates with defaults', async () => {
    const before = Date.now() - 2000;
    await withCapsule({}, async (capsule) => {
      assert.ok(capsule instanceof Capsule);
      assert.match(capsule.id, /^[a-z0-9]{8}$/);
      assert.equal(capsule.template, 'base');
      assert.ok(capsule.createdAt instanceof Date);
      assert.ok(capsule.createdAt.getTime() >= before);
      assert.equal(capsule.expiresAt.getTime() - capsule.createdAt.getTime(), 600_000);
      const info = await capsule.info();
      assert.equal(info.id, capsule.id);
      assert.equal(info.state, 'running');
      assert.equal(info.template, 'base');
      assert.equal(info.cpu, 1);
      assert.equal(info.memoryMb, 512);
      assert.deepEqual(info.metadata, {});
      assert.ok(info.createdAt instanceof Date && info.expiresAt instanceof Date);
    });
  });

  it('creates with every option, or from a template name', async () => {
    await withCapsule(
      { template: 'python', ttlMs: 120_000, cpu: 0.5, memoryMb: 256, env: { GREETING: 'bonjour' }, metadata: { suite: 'ts' }, network: 'none' },
      async (capsule) => {
        assert.equal(capsule.template, 'python');
        assert.equal(capsule.expiresAt.getTime() - capsule.createdAt.getTime(), 120_000);
        const info = await capsule.info();
        assert.equal(info.cpu, 0.5);
        assert.equal(info.memoryMb, 256);
        assert.deepEqual(info.metadata, { suite: 'ts' });
        assert.equal((await capsule.exec('echo $GREETING')).stdout, 'bonjour\n');
      },
    );
    await withCapsule('node', async (capsule) => {
      assert.equal(capsule.template, 'node');
    });
  });

  it('gets and lists sandboxes', async () => {
    await withCapsule({ metadata: { team: 'red' } }, async (red) => {
      await withCapsule({ metadata: { team: 'blue' } }, async (blue) => {
        const again = await client.get(red.id);
        assert.ok(again instanceof Capsule);
        assert.equal(again.id, red.id);
        assert.equal(again.createdAt.getTime(), red.createdAt.getTime());
        assert.equal((await again.exec(['echo', 'via get'])).stdout, 'via get\n');

        const all = (await client.list()).map((s) => s.id);
        assert.ok(all.includes(red.id) && all.includes(blue.id));
        const onlyRed = await client.list({ metadata: { team: 'red' } });
        assert.deepEqual(onlyRed.map((s) => s.id), [red.id]);
        assert.deepEqual(onlyRed[0].metadata, { team: 'red' });
        assert.deepEqual(await client.list({ metadata: { team: 'red', other: 'x' } }), []);
      });
    });
  });

  it('sets the timeout', async () => {
    await withCapsule({}, async (capsule) => {
      const old = capsule.expiresAt;
      const next = await capsule.setTimeout(3_600_000);
      assert.ok(next instanceof Date);
      assert.equal(next.getTime(), capsule.expiresAt.getTime());
      assert.ok(next > old);
      const left = next.getTime() - Date.now();
      assert.ok(left > 59 * 60_000 && left <= 60 * 60_000 + 1000, String(left));
      assert.equal((await capsule.info()).expiresAt.getTime(), next.getTime());
      await capsule.setTimeout(1000);
      await sleep(2500);
      await assert.rejects(capsule.exec('true'), SandboxExpiredError);
    });
  });

  it('runs code with the template interpreter', async () => {
    await withCapsule({ template: 'python' }, async (py) => {
      const r = await py.run('print(sum(range(10)))');
      assert.deepEqual(
        { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, timedOut: r.timedOut, signal: r.signal },
        { stdout: '45\n', stderr: '', exitCode: 0, timedOut: false, signal: undefined },
      );
      assert.equal(typeof r.durationMs, 'number');
      assert.equal(r.stdoutTruncated, false);
      assert.equal((await py.run('import sys; sys.exit(3)')).exitCode, 3);
      const err = await py.run('1/0');
      assert.equal(err.exitCode, 1);
      assert.match(err.stderr, /ZeroDivisionError/);
      const io = await py.run("import os, sys; print(os.environ['X'], sys.stdin.read())", { env: { X: 'ex' }, stdin: 'in' });
      assert.equal(io.stdout, 'ex in\n');
      assert.equal((await py.run('import time; time.sleep(30)', { timeoutMs: 300 })).timedOut, true);
    });
    await withCapsule({ template: 'node' }, async (node) => {
      assert.equal((await node.run('console.log(6*7)')).stdout, '42\n');
    });
    await withCapsule({ template: 'base' }, async (base) => {
      assert.equal((await base.run('echo $((2+3))')).stdout, '5\n');
    });
  });

  it('executes commands', async () => {
    await withCapsule({}, async (c) => {
      assert.equal((await c.exec(['printf', '%s|', 'a b', '$HOME'])).stdout, 'a b|$HOME|');
      assert.equal((await c.exec('echo $HOME; pwd')).stdout, '/home/user\n/workspace\n');
      const r = await c.exec('echo $GREETING; pwd; cat', { env: { GREETING: 'hi' }, cwd: '/tmp', stdin: 'from stdin' });
      assert.equal(r.stdout, 'hi\n/tmp\nfrom stdin');
      assert.equal((await c.exec(['id', '-u'])).stdout, '1000\n');
      assert.equal((await c.exec(['id', '-u'], { user: 'root' })).stdout, '0\n');
      const e = await c.exec('echo out; echo err >&2; exit 7');
      assert.deepEqual([e.exitCode, e.stdout, e.stderr, e.signal], [7, 'out\n', 'err\n', undefined]);
      const k = await c.exec('kill -9 $$');
      assert.deepEqual([k.exitCode, k.signal], [-1, 9]);
      const missing = await c.exec(['no-such-program']);
      assert.equal(missing.exitCode, 127);
      assert.match(missing.stderr, /no-such-program/);
    });
  });

  it('times out commands and keeps their output', async () => {
    await withCapsule({}, async (c) => {
      const started = Date.now();
      const r = await c.exec('echo before; sleep 60', { timeoutMs: 500 });
      assert.ok(Date.now() - started < 20_000);
      assert.equal(r.timedOut, true);
      assert.equal(r.stdout, 'before\n');
      assert.ok(r.durationMs >= 500);
    });
  });

  it('reports truncated output', async () => {
    await withCapsule({}, async (c) => {
      const r = await c.exec(`head -c ${OUTPUT_LIMIT * 2} /dev/zero | tr '\\0' a; echo small >&2`);
      assert.equal(r.stdoutTruncated, true);
      assert.equal(r.stdout.length, OUTPUT_LIMIT);
      assert.equal(r.stderr, 'small\n');
      assert.equal(r.stderrTruncated, false);
    });
  });

  it('waits for commands longer than the client timeout', async () => {
    const short = new CapsuleClient({ baseUrl: server.url, timeoutMs: 1000 });
    const c = await short.create();
    try {
      assert.equal((await c.exec('sleep 2; echo done', { timeoutMs: 10_000 })).stdout, 'done\n');
    } finally {
      await c.delete();
    }
  });

  it('writes and reads text and bytes', async () => {
    await withCapsule({}, async (c) => {
      assert.deepEqual(await c.writeFile('/workspace/data.txt', 'Hello World'), { path: '/workspace/data.txt', size: 11 });
      assert.equal(await c.readFileText('/workspace/data.txt'), 'Hello World');
      const raw = await c.readFile('/workspace/data.txt');
      assert.ok(raw instanceof Uint8Array);
      assert.deepEqual([...raw], [...new TextEncoder().encode('Hello World')]);
      assert.equal((await c.exec(['cat', '/workspace/data.txt'])).stdout, 'Hello World');

      await c.writeFile('unicode.txt', 'héllo ☃');
      assert.equal(await c.readFileText('unicode.txt'), 'héllo ☃');
      assert.equal((await c.stat('unicode.txt')).size, new TextEncoder().encode('héllo ☃').length);

      const blob = new Uint8Array(2_000_000);
      for (let i = 0; i < blob.length; i++) blob[i] = (i * 7) % 256;
      assert.equal((await c.writeFile('/tmp/blob.bin', blob)).size, blob.length);
      const back = await c.readFile('/tmp/blob.bin');
      assert.equal(back.length, blob.length);
      assert.ok(Buffer.from(back).equals(Buffer.from(blob)));
      await c.writeFile('/tmp/ab.bin', new Uint8Array([0, 255]).buffer);
      assert.deepEqual([...(await c.readFile('/tmp/ab.bin'))], [0, 255]);
      assert.equal((await c.writeFile('empty', '')).size, 0);
      assert.equal((await c.readFile('empty')).length, 0);
    });
  });

  it('writes with modes, relative paths and as root', async () => {
    await withCapsule({}, async (c) => {
      const w = await c.writeFile('deep/er/run.sh', '#!/bin/sh\necho ran\n', { mode: 0o755 });
      assert.equal(w.path, '/workspace/deep/er/run.sh');
      assert.equal((await c.exec(['/workspace/deep/er/run.sh'])).stdout, 'ran\n');
      await c.writeFile('secret', 's', { mode: '0600' });
      assert.equal((await c.stat('secret')).mode, 0o600);
      assert.equal((await c.exec(['stat', '-c', '%U %a', '/workspace/secret'])).stdout, 'user 600\n');
      await c.writeFile('/etc/motd', 'root was here', { user: 'root' });
      assert.equal(await c.readFileText('/etc/motd', { user: 'root' }), 'root was here');
      assert.equal((await c.exec(['stat', '-c', '%U', '/etc/motd'])).stdout, 'root\n');
    });
  });

  it('lists, stats, makes and removes', async () => {
    await withCapsule({}, async (c) => {
      await c.writeFile('a.txt', '12345');
      await c.exec('mkdir -p /workspace/d && ln -s /etc/hostname /workspace/link');
      const entries = Object.fromEntries((await c.listDir('/workspace')).map((e) => [e.name, e]));
      assert.deepEqual(Object.keys(entries).sort(), ['a.txt', 'd', 'link']);
      const a = entries['a.txt'];
      assert.deepEqual([a.path, a.type, a.size, a.mode], ['/workspace/a.txt', 'file', 5, 0o644]);
      assert.ok(a.modifiedAt instanceof Date && Math.abs(a.modifiedAt.getTime() - Date.now()) < 300_000);
      assert.equal(a.symlinkTarget, undefined);
      assert.equal(entries.d.type, 'dir');
      assert.equal(entries.link.type, 'symlink');
      assert.equal(entries.link.symlinkTarget, '/etc/hostname');
      assert.deepEqual((await c.listDir()).map((e) => e.name).sort(), ['a.txt', 'd', 'link']);
      assert.deepEqual(await c.listDir('d'), []);

      const st = await c.stat('/workspace/a.txt');
      assert.deepEqual([st.name, st.size, st.type], ['a.txt', 5, 'file']);
      const made = await c.makeDir('newdir/sub');
      assert.deepEqual([made.path, made.type], ['/workspace/newdir/sub', 'dir']);
      await c.writeFile('newdir/sub/f', 'x');
      await c.remove('newdir');
      assert.ok(!(await c.listDir()).some((e) => e.name === 'newdir'));
      await c.remove('a.txt');
      assert.equal((await c.exec('test -e /workspace/a.txt')).exitCode, 1);
    });
  });

  it('deletes', async () => {
    const c = await client.create();
    assert.ok((await server.sandboxIds()).includes(c.id));
    await c.delete();
    assert.ok(!(await server.sandboxIds()).includes(c.id));
    await assert.rejects(client.get(c.id), (e) => e instanceof SandboxNotFoundError && e.message.includes(c.id));
    await assert.rejects(c.delete(), SandboxNotFoundError);
  });

  it('accepts full method names and trailing slashes', async () => {
    const c2 = new CapsuleClient({ baseUrl: `${server.url}/` });
    assert.equal(c2.baseUrl, server.url);
    assert.ok(Array.isArray((await c2.call('sandbox.v1.list', {})).sandboxes));
    assert.ok(Array.isArray((await c2.call('templates')).templates));
  });

  it('sends the API key without breaking an open server', async () => {
    const keyed = new CapsuleClient({ baseUrl: server.url, apiKey: 'secret-key' });
    const c = await keyed.create();
    try {
      assert.equal((await c.exec('echo ok')).stdout, 'ok\n');
    } finally {
      await c.delete();
    }
  });

  it('refuses a bad base URL', () => {
    assert.throws(() => new CapsuleClient({ baseUrl: 'localhost:8080' }), TypeError);
    assert.throws(() => new CapsuleClient({ baseUrl: 'ftp://x' }), /http/);
  });

  it('defaults to localhost:8080 and knows its version', () => {
    assert.equal(new CapsuleClient().baseUrl, 'http://localhost:8080');
    assert.equal(VERSION, '0.1.0');
  });
});
