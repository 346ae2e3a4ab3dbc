// The interactive terminal over a real WebSocket.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  Capsule,
  CapsuleClient,
  CapsuleTimeoutError,
  InvalidParamsError,
  SandboxNotFoundError,
  Terminal,
  TerminalClosedError,
  UnauthorizedError,
} from '../dist/index.js';
import { CapsuleServer, serverSupports } from './helpers/server.mjs';

// A line of output that is exactly "hi" (the typed "echo hi" is echoed too).
const HI_LINE = /[\r\n]hi\r\n/;

let server;
let client;

before(async () => {
  server = await new CapsuleServer().start();
  client = new CapsuleClient({ baseUrl: server.url });
});

after(async () => {
  await server?.stop();
});

async function withCapsule(fn) {
  const capsule = await client.create();
  try {
    return await fn(capsule);
  } finally {
    await capsule.delete().catch(() => {});
  }
}

function ghost(c, id) {
  return new Capsule(c, { id, template: 'base', createdAt: new Date(), expiresAt: new Date() });
}

describe('terminal', () => {
  it('echoes, with input queued before the socket opens', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal();
      assert.ok(term instanceof Terminal);
      assert.equal(term.readyState, Terminal.CONNECTING);
      term.send('echo hi\n'); // before open: queued
      const out = await term.expect(HI_LINE);
      assert.match(out, /echo hi/);
      assert.equal(term.readyState, Terminal.OPEN);
      term.close();
      assert.equal(term.readyState, Terminal.CLOSED);
    });
  });

  it('delivers output to onmessage and listeners as strings', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal();
      const viaProperty = [];
      const viaListener = [];
      let opened = 0;
      term.onopen = () => opened++;
      term.onmessage = (e) => {
        assert.equal(e.type, 'message');
        assert.equal(typeof e.data, 'string');
        viaProperty.push(e.data);
      };
      term.addEventListener('message', (e) => viaListener.push(e.data));
      await term.opened;
      assert.equal(opened, 1);
      term.send(new TextEncoder().encode('echo $((6 * 7))\n'));
      await term.expect('42');
      assert.match(viaProperty.join(''), /42/);
      assert.equal(viaListener.join(''), viaProperty.join(''));
      term.close();
    });
  });

  it('sets the initial size and resizes', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal({ cols: 100, rows: 30 });
      term.send('stty size\n');
      await term.expect(/\b30 100\b/);
      term.resize(120, 40);
      term.send('stty size\n');
      await term.expect(/\b40 120\b/);
      term.send('tput cols\n');
      await term.expect(/[\r\n]120\r\n/);
      term.close();
    });
  });

  it('queues a resize made before the socket opens', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal();
      term.resize(132, 43);
      term.send('stty size\n');
      await term.expect(/\b43 132\b/);
      term.close();
    });
  });

  it('defaults to 80x24', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal();
      term.send('stty size\n');
      await term.expect(/\b24 80\b/);
      term.close();
    });
  });

  it('refuses bad sizes', async () => {
    await withCapsule(async (capsule) => {
      assert.throws(() => capsule.connectTerminal({ cols: 0 }), RangeError);
      const term = capsule.connectTerminal();
      assert.throws(() => term.resize(80, 5000), RangeError);
      term.close();
    });
  });

  it('closes with the exit status when the shell exits', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal();
      const events = [];
      term.onclose = (e) => events.push(e);
      term.send('echo $((1 + 1)); exit 3\n');
      const closed = await term.closed;
      assert.deepEqual(closed, { type: 'close', code: 1000, reason: 'exit status 3', wasClean: true });
      assert.deepEqual(events, [closed]);
      assert.equal(term.readyState, Terminal.CLOSED);
      assert.equal(term.closeReason, 'exit status 3');
      await term.expect(/[\r\n]2\r\n/); // output before the close is still readable
      assert.throws(() => term.send('echo late\n'), TerminalClosedError);
      await assert.rejects(term.expect('never'), (e) => e instanceof TerminalClosedError && e.closeCode === 1000 && e.reason === 'exit status 3');
      term.close(); // harmless
    });
  });

  it('runs as the sandbox user in /workspace, keeping shell state', async () => {
    await withCapsule(async (capsule) => {
      await capsule.writeFile('marker.txt', 'm');
      const term = capsule.connectTerminal();
      term.send('id -u; ls\n');
      await term.expect(/[\r\n]1000\r\n/);
      await term.expect('marker.txt');
      term.send('cd /tmp && X=remembered\n');
      term.send('echo $X-$(pwd)\n');
      await term.expect('remembered-/tmp');
      term.close();
    });
  });

  it('times out expect', async () => {
    await withCapsule(async (capsule) => {
      const term = capsule.connectTerminal();
      await assert.rejects(term.expect('never-printed', { timeoutMs: 300 }), CapsuleTimeoutError);
      term.close();
    });
  });

  it('reports an unknown sandbox as SandboxNotFoundError', async () => {
    const term = ghost(client, 'zzzzzzzz').connectTerminal();
    const errors = [];
    term.onerror = (e) => errors.push(e.error);
    term.send('queued and dropped\n');
    await assert.rejects(term.opened, SandboxNotFoundError);
    const closed = await term.closed;
    assert.equal(closed.code, 1006);
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof SandboxNotFoundError);
    assert.equal(errors[0].data.id, 'zzzzzzzz');
    const bad = ghost(client, 'ZZ').connectTerminal();
    await assert.rejects(bad.opened, InvalidParamsError);
  });

  it('delete() closes the terminals the capsule opened', async () => {
    const capsule = await client.create();
    const term = capsule.connectTerminal();
    term.send('echo $((3 * 3))\n');
    await term.expect('9');
    await capsule.delete();
    assert.equal(term.readyState, Terminal.CLOSED);
    await term.closed;
  });

  it('delete() right after connectTerminal() ends cleanly', async () => {
    const capsule = await client.create();
    const term = capsule.connectTerminal();
    term.send('python3\n');
    await capsule.delete();
    const closed = await term.closed;
    assert.equal(closed.type, 'close');
    assert.equal(term.readyState, Terminal.CLOSED);
  });

  it('keeps two terminals independent', async () => {
    await withCapsule(async (capsule) => {
      const a = capsule.connectTerminal();
      const b = capsule.connectTerminal();
      a.send('A=one; echo a-$A\n');
      b.send('echo b-${A:-unset}\n');
      await a.expect('a-one');
      await b.expect('b-unset');
      a.close();
      b.close();
    });
  });

  const hasGlobalWebSocket = spawnSync(process.execPath, ['--experimental-websocket', '-e', 'process.exit(typeof WebSocket === "function" ? 0 : 1)']).status === 0;
  it('works through a global WebSocket (the browser code path)', { skip: !hasGlobalWebSocket && 'this node has no global WebSocket' }, () => {
    const script = fileURLToPath(new URL('./fixtures/global-websocket.mjs', import.meta.url));
    const r = spawnSync(process.execPath, ['--experimental-websocket', '--no-warnings', script, server.url], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop());
    assert.deepEqual(out, {
      initial: true,
      resized: true,
      closed: { type: 'close', code: 1000, reason: 'exit status 2', wasClean: true },
      // Browsers do not expose why an upgrade failed.
      ghostError: 'CapsuleConnectionError',
    });
  });

  it('sends the API key to a server that requires one', { skip: !serverSupports('--api-keys') && 'no --api-keys in this binary' }, async () => {
    const keyed = await new CapsuleServer({ args: ['--api-keys', 'ts-key'], apiKey: 'ts-key' }).start();
    try {
      const good = new CapsuleClient({ baseUrl: keyed.url, apiKey: 'ts-key' });
      await assert.rejects(new CapsuleClient({ baseUrl: keyed.url }).list(), UnauthorizedError);
      await assert.rejects(new CapsuleClient({ baseUrl: keyed.url, apiKey: 'wrong' }).list(), /not valid/);
      const capsule = await good.create();
      try {
        const term = capsule.connectTerminal();
        term.send('echo $((40 + 2))\n');
        await term.expect('42');
        term.close();
        const anonymous = ghost(new CapsuleClient({ baseUrl: keyed.url }), capsule.id).connectTerminal();
        await assert.rejects(anonymous.opened, UnauthorizedError);
      } finally {
        await capsule.delete();
      }
    } finally {
      await keyed.stop();
    }
  });
});
