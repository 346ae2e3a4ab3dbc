// Pause and resume, snapshots, forks, volumes, stats, pools and the newer
// create options against a real server. Snapshots, forks, volumes and disk
// limits need the server's btrfs storage, which needs root (STORAGE_ARGS).
//
// Bad inputs are checked against the server itself: the SDK must reject
// with the class of the kind the server reports, carrying the server's own
// message and data (the same request sent without the SDK gives the same
// error).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import {
  AlreadyExistsError,
  Capsule,
  CapsuleClient,
  CapsuleError,
  InvalidParamsError,
  SandboxNotFoundError,
  UnauthorizedError,
  UnsupportedError,
} from '../dist/index.js';
import { CapsuleServer, STORAGE_ARGS, withSandbox } from './helpers/server.mjs';

const MIB = 1 << 20;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A snapshot or volume name no other test uses. */
const unique = (prefix) => `${prefix}-${randomBytes(5).toString('hex')}`;

let server;
let client;

before(async () => {
  server = await new CapsuleServer({ args: STORAGE_ARGS }).start();
  client = new CapsuleClient({ baseUrl: server.url });
});

after(async () => {
  await server?.stop();
});

/** Runs `fn` with a fresh sandbox and deletes it afterwards. */
const withCapsule = (options, fn) => withSandbox(client, options, fn);

/** A sandbox that was deleted. */
async function goneCapsule() {
  const capsule = await client.create();
  await capsule.delete();
  return capsule;
}

/**
 * Asserts `promise` rejects with exactly `cls`, carrying the kind, code,
 * message and data the server answers to the same raw request; returns the
 * error.
 */
async function rejectsLikeServer(promise, cls, method, params, srv = server) {
  let caught;
  await assert.rejects(promise, (e) => {
    caught = e;
    return true;
  });
  assert.equal(caught.constructor, cls, `${caught.name}: ${caught.message}`);
  assert.ok(caught instanceof CapsuleError);
  const raw = await srv.rpc(`sandbox.v1.${method}`, params);
  assert.ok(raw.error, JSON.stringify(raw));
  assert.equal(caught.message, raw.error.message);
  assert.equal(caught.code, raw.error.code);
  assert.equal(caught.kind, raw.error.data.kind);
  assert.deepEqual(caught.data, raw.error.data);
  return caught;
}

describe('pause and resume', () => {
  it('pauses, and exec resumes', async () => {
    await withCapsule({}, async (c) => {
      await c.writeFile('note.txt', 'kept while paused');
      await c.exec('sleep 600 >/dev/null 2>&1 &');
      const r = await c.pause();
      assert.deepEqual([r.id, r.state], [c.id, 'paused']);
      assert.ok(r.expiresAt instanceof Date);
      assert.equal(r.expiresAt.getTime(), c.expiresAt.getTime());
      assert.equal((await c.info()).state, 'paused');
      assert.equal((await c.pause()).state, 'paused');
      assert.equal(await c.readFileText('note.txt'), 'kept while paused');
      assert.equal((await c.exec('pgrep -x sleep >/dev/null && echo alive')).stdout, 'alive\n');
      assert.equal((await c.info()).state, 'running');
    });
  });

  it('resumes', async () => {
    await withCapsule({}, async (c) => {
      await c.pause();
      assert.equal((await c.stats()).state, 'paused');
      const r = await c.resume();
      assert.deepEqual([r.id, r.state], [c.id, 'running']);
      assert.equal(c.expiresAt.getTime(), r.expiresAt.getTime());
      assert.equal((await c.info()).state, 'running');
      assert.equal((await c.resume()).state, 'running');
      assert.equal((await c.exec('echo up')).stdout, 'up\n');
    });
  });

  it('refuses a deleted sandbox', async () => {
    const gone = await goneCapsule();
    const e = await rejectsLikeServer(gone.pause(), SandboxNotFoundError, 'pause', { id: gone.id });
    assert.match(e.message, new RegExp(gone.id));
    await rejectsLikeServer(gone.resume(), SandboxNotFoundError, 'resume', { id: gone.id });
  });

  it('pauses by itself with autoPauseMs', async () => {
    await withCapsule({ autoPauseMs: 1000 }, async (c) => {
      await c.writeFile('f', 'x');
      await sleep(3000);
      assert.equal((await c.info()).state, 'paused');
      assert.equal((await c.exec('cat f')).stdout, 'x');
      assert.equal((await c.info()).state, 'running');
    });
    await rejectsLikeServer(client.create({ autoPauseMs: 5 }), InvalidParamsError, 'create', { auto_pause_ms: 5 });
  });

  it('pauses at its end time with pauseOnExpiry', async () => {
    await withCapsule({ ttlMs: 1000, pauseOnExpiry: true }, async (c) => {
      await c.writeFile('f', 'survives its end time');
      await sleep(3000);
      assert.equal((await c.info()).state, 'paused');
      assert.equal(await c.readFileText('f'), 'survives its end time');
      const info = await c.info();
      assert.equal(info.state, 'running');
      assert.ok(info.expiresAt.getTime() > Date.now() + 60_000);
    });
  });
});

describe('snapshots', () => {
  it('snapshots, then creates from the snapshot', async () => {
    const name = unique('snap');
    let snap;
    await withCapsule({ template: 'python' }, async (source) => {
      await source.writeFile('state.txt', 'captured');
      snap = await source.snapshot({ name });
      assert.deepEqual([snap.name, snap.source, snap.template], [name, source.id, 'python']);
      assert.match(snap.snapshotId, /^snap-/);
      assert.equal(typeof snap.sizeBytes, 'number');
      assert.ok(snap.createdAt instanceof Date && Math.abs(snap.createdAt.getTime() - Date.now()) < 300_000);
      await source.writeFile('state.txt', 'changed later');
    });
    await withCapsule({ snapshot: name }, async (byName) => {
      assert.equal(byName.template, 'python');
      assert.equal(await byName.readFileText('state.txt'), 'captured');
      assert.equal((await byName.run("print(open('state.txt').read())")).stdout, 'captured\n');
      await withCapsule({ template: 'python', snapshot: snap.snapshotId }, async (byId) => {
        assert.equal(await byId.readFileText('/workspace/state.txt'), 'captured');
        await byId.writeFile('state.txt', 'mine');
        assert.equal(await byName.readFileText('state.txt'), 'captured');
      });
    });
    await client.deleteSnapshot(name);
  });

  it('lists and deletes snapshots', async () => {
    await withCapsule({}, async (c) => {
      await c.writeFile('a', '1');
      const named = await c.snapshot({ name: unique('listed') });
      const unnamed = await c.snapshot();
      assert.equal(unnamed.name, undefined);
      assert.notEqual(unnamed.snapshotId, named.snapshotId);
      const snapshots = await client.listSnapshots();
      const ids = snapshots.map((s) => s.snapshotId);
      assert.deepEqual(snapshots.find((s) => s.snapshotId === named.snapshotId), named);
      assert.deepEqual(snapshots.find((s) => s.snapshotId === unnamed.snapshotId), unnamed);
      assert.ok(ids.indexOf(named.snapshotId) < ids.indexOf(unnamed.snapshotId), 'oldest first');

      await withCapsule({ snapshot: unnamed.snapshotId }, async (child) => {
        assert.equal(await client.deleteSnapshot(named.name), undefined);
        await client.deleteSnapshot(unnamed.snapshotId);
        const remaining = (await client.listSnapshots()).map((s) => s.snapshotId);
        assert.ok(!remaining.includes(named.snapshotId) && !remaining.includes(unnamed.snapshotId));
        assert.equal(await child.readFileText('a'), '1');
      });
    });
  });

  it('refuses bad snapshots', async () => {
    await withCapsule({}, async (c) => {
      const bad = await rejectsLikeServer(c.snapshot({ name: 'Not A Name' }), InvalidParamsError, 'snapshot', {
        id: c.id,
        name: 'Not A Name',
      });
      assert.match(bad.message, /Not A Name/);
      const taken = unique('taken');
      await c.snapshot({ name: taken });
      try {
        const dup = await rejectsLikeServer(c.snapshot({ name: taken }), AlreadyExistsError, 'snapshot', { id: c.id, name: taken });
        assert.ok(dup.message.includes(taken));
        const other = await rejectsLikeServer(
          client.create({ template: 'python', snapshot: taken }),
          InvalidParamsError,
          'create',
          { template: 'python', snapshot: taken },
        );
        assert.match(other.message, /base/);
      } finally {
        await client.deleteSnapshot(taken);
      }
    });
    const gone = await goneCapsule();
    await rejectsLikeServer(gone.snapshot(), SandboxNotFoundError, 'snapshot', { id: gone.id });
    const missing = await rejectsLikeServer(client.create({ snapshot: 'no-such-snap' }), InvalidParamsError, 'create', {
      snapshot: 'no-such-snap',
    });
    assert.match(missing.message, /no-such-snap/);
    const del = await rejectsLikeServer(client.deleteSnapshot('no-such-snap'), InvalidParamsError, 'deleteSnapshot', {
      snapshot: 'no-such-snap',
    });
    assert.match(del.message, /no-such-snap/);
  });
});

describe('forks', () => {
  it('forks two copies that both see the source files', async () => {
    await withCapsule({ metadata: { origin: 'source' }, env: { FROM: 'env' } }, async (source) => {
      await source.writeFile('shared.txt', 'from the source');
      const forks = await source.fork({ count: 2, metadata: { copy: 'yes' } });
      try {
        assert.equal(forks.length, 2);
        assert.equal(new Set([source.id, ...forks.map((f) => f.id)]).size, 3);
        for (const f of forks) {
          assert.ok(f instanceof Capsule);
          assert.equal(f.template, 'base');
          assert.equal(await f.readFileText('shared.txt'), 'from the source');
          assert.equal((await f.exec('echo $FROM')).stdout, 'env\n');
          const info = await f.info();
          assert.deepEqual(info.metadata, { origin: 'source', copy: 'yes' });
          assert.equal(info.state, 'running');
        }
        await forks[0].writeFile('shared.txt', 'changed in fork 0');
        assert.equal(await forks[1].readFileText('shared.txt'), 'from the source');
        assert.equal(await source.readFileText('shared.txt'), 'from the source');
        assert.equal((await source.exec('echo still here')).stdout, 'still here\n');

        const [single] = await source.fork();
        forks.push(single);
        // (Times are whole seconds, so rounding may add one.)
        assert.ok(Math.abs(single.expiresAt.getTime() - source.expiresAt.getTime()) <= 1000);
        const [short] = await source.fork({ ttlMs: 60_000 });
        forks.push(short);
        const left = short.expiresAt.getTime() - Date.now();
        assert.ok(left > 55_000 && left <= 61_000, String(left));
      } finally {
        for (const f of forks) await f.delete().catch(() => {});
      }
    });
  });

  it('refuses bad forks', async () => {
    await withCapsule({}, async (c) => {
      for (const count of [0, 65]) {
        const e = await rejectsLikeServer(c.fork({ count }), InvalidParamsError, 'fork', { id: c.id, count });
        assert.match(e.message, new RegExp(`count.*${count}`));
      }
    });
    const gone = await goneCapsule();
    await rejectsLikeServer(gone.fork(), SandboxNotFoundError, 'fork', { id: gone.id, count: 1 });
  });
});

describe('volumes', () => {
  it('mounts a volume read-write into one sandbox and read-only into another', async () => {
    const name = unique('vol');
    const vol = await client.createVolume(name, 64);
    assert.deepEqual([vol.name, vol.sizeBytes, vol.usedBy], [name, 64 * MIB, []]);
    assert.ok(vol.createdAt instanceof Date);
    const byName = async () => (await client.listVolumes()).find((v) => v.name === name);
    try {
      assert.deepEqual(await byName(), vol);
      await withCapsule({ volumes: [{ name, path: '/data' }] }, async (writer) => {
        const w = await writer.exec('echo persisted > /data/out.txt && stat -c %U /data/out.txt');
        assert.equal(w.exitCode, 0, w.stderr);
        assert.equal(w.stdout, 'user\n');
        assert.deepEqual((await byName()).usedBy, [writer.id]);
        await withCapsule({ volumes: [{ name, path: '/mnt/in', readOnly: true }] }, async (reader) => {
          assert.equal(await reader.readFileText('/mnt/in/out.txt'), 'persisted\n');
          const r = await reader.exec('echo nope > /mnt/in/other.txt');
          assert.notEqual(r.exitCode, 0);
          assert.match(r.stderr, /Read-only file system/);
          assert.equal((await writer.exec('ls /data')).stdout, 'out.txt\n');
          assert.deepEqual((await byName()).usedBy.sort(), [writer.id, reader.id].sort());
          const e = await rejectsLikeServer(client.deleteVolume(name), InvalidParamsError, 'deleteVolume', { name });
          assert.deepEqual([...e.data.used_by].sort(), [writer.id, reader.id].sort());
        });
      });
      await withCapsule({ volumes: [{ name, path: '/again', readOnly: true }] }, async (later) => {
        assert.equal(await later.readFileText('/again/out.txt'), 'persisted\n');
      });
    } finally {
      await client.deleteVolume(name);
    }
    assert.equal(await byName(), undefined);
  });

  it('refuses bad volumes', async () => {
    const bad = await rejectsLikeServer(client.createVolume('Bad Name!', 16), InvalidParamsError, 'createVolume', {
      name: 'Bad Name!',
      size_mb: 16,
    });
    assert.match(bad.message, /Bad Name!/);
    const name = unique('dup');
    await rejectsLikeServer(client.createVolume(name, 0), InvalidParamsError, 'createVolume', { name, size_mb: 0 });
    await client.createVolume(name, 16);
    try {
      const dup = await rejectsLikeServer(client.createVolume(name, 16), AlreadyExistsError, 'createVolume', { name, size_mb: 16 });
      assert.ok(dup.message.includes(name));
      const reserved = await rejectsLikeServer(
        client.create({ volumes: [{ name, path: '/tmp/x' }] }),
        InvalidParamsError,
        'create',
        { volumes: [{ name, path: '/tmp/x', read_only: false }] },
      );
      assert.match(reserved.message, /\/tmp\/x/);
    } finally {
      await client.deleteVolume(name);
    }
    const missing = await rejectsLikeServer(
      client.create({ volumes: [{ name: 'no-such-volume', path: '/data' }] }),
      InvalidParamsError,
      'create',
      { volumes: [{ name: 'no-such-volume', path: '/data', read_only: false }] },
    );
    assert.match(missing.message, /no-such-volume/);
    const del = await rejectsLikeServer(client.deleteVolume('no-such-volume'), InvalidParamsError, 'deleteVolume', {
      name: 'no-such-volume',
    });
    assert.match(del.message, /no-such-volume/);
    await assert.rejects(client.create({ volumes: ['not-a-volume'] }), TypeError);
  });
});

describe('stats, disk limits and runtimes', () => {
  it('reports stats as numbers', async () => {
    await withCapsule({}, async (c) => {
      await c.writeFile('blob', new Uint8Array(2 * MIB));
      const s = await c.stats();
      assert.deepEqual([s.id, s.state], [c.id, 'running']);
      assert.equal(s.memoryLimitBytes, 512 * MIB);
      assert.equal(s.pidsLimit, 256);
      for (const key of ['cpuNs', 'memoryBytes', 'memoryPeakBytes', 'pids', 'diskBytes', 'diskLimitBytes']) {
        assert.ok(Number.isInteger(s[key]), `${key}: ${s[key]}`);
      }
      assert.ok(s.cpuNs > 0);
      assert.ok(s.pids >= 1);
      assert.ok(s.memoryPeakBytes >= s.memoryBytes && s.memoryBytes > 0);
      assert.ok(s.diskBytes >= 2 * MIB);
      assert.equal(s.diskLimitBytes, 10240 * MIB);
      assert.ok(!('networkRxBytes' in s) && !('networkTxBytes' in s));
    });
    const gone = await goneCapsule();
    await rejectsLikeServer(gone.stats(), SandboxNotFoundError, 'stats', { id: gone.id });
  });

  it('limits the disk with diskMb', async () => {
    await withCapsule({ diskMb: 32 }, async (c) => {
      assert.equal((await c.stats()).diskLimitBytes, 32 * MIB);
      const r = await c.exec('head -c 64000000 /dev/zero > /workspace/big');
      assert.notEqual(r.exitCode, 0);
      assert.match(r.stderr, /Disk quota exceeded/);
    });
    const e = await rejectsLikeServer(client.create({ diskMb: 1 }), InvalidParamsError, 'create', { disk_mb: 1 });
    assert.match(e.message, /disk_mb/);
  });

  it('chooses the runtime', async () => {
    await withCapsule({ runtime: 'native' }, async (c) => {
      assert.equal((await c.info()).runtime, 'native');
      assert.equal((await c.exec('echo native')).stdout, 'native\n');
      assert.equal((await client.list()).find((s) => s.id === c.id).runtime, 'native');
    });
    const e = await rejectsLikeServer(client.create({ runtime: 'no-such-runtime' }), UnsupportedError, 'create', {
      runtime: 'no-such-runtime',
    });
    assert.match(e.message, /no-such-runtime/);
  });
});

describe('pools', () => {
  it('lists no pools on a server without any', async () => {
    assert.deepEqual(await client.pools(), []);
  });

  it('lists a pool and fills it', async () => {
    const pooled = await new CapsuleServer({ args: ['--pool', 'base=1', ...STORAGE_ARGS] }).start();
    try {
      const c = new CapsuleClient({ baseUrl: pooled.url });
      const deadline = Date.now() + 60_000;
      let pools = await c.pools();
      while (pools[0].ready < 1 && Date.now() < deadline) {
        await sleep(200);
        pools = await c.pools();
      }
      assert.deepEqual(pools, [{ template: 'base', size: 1, ready: 1 }]);
      const claimed = await c.create({ env: { X: 'claimed' } });
      try {
        assert.equal((await claimed.exec('echo $X')).stdout, 'claimed\n');
        const [pool] = await c.pools();
        assert.deepEqual([pool.template, pool.size], ['base', 1]);
      } finally {
        await claimed.delete();
      }
    } finally {
      await pooled.stop();
    }
  });

  it('listings without a key are refused with the server message', async () => {
    const key = 'sdk-features-key';
    const keyed = await new CapsuleServer({ args: ['--api-keys', key], apiKey: key }).start();
    try {
      const anonymous = new CapsuleClient({ baseUrl: keyed.url });
      for (const call of [() => anonymous.listSnapshots(), () => anonymous.listVolumes(), () => anonymous.pools()]) {
        await assert.rejects(call(), (e) => {
          assert.equal(e.constructor, UnauthorizedError);
          assert.equal(e.kind, 'unauthorized');
          assert.match(e.message, /API key/);
          return true;
        });
      }
      const withKey = new CapsuleClient({ baseUrl: keyed.url, apiKey: key });
      assert.ok(Array.isArray(await withKey.listSnapshots()));
      assert.ok(Array.isArray(await withKey.listVolumes()));
      assert.deepEqual(await withKey.pools(), []);
    } finally {
      await keyed.stop();
    }
  });
});
