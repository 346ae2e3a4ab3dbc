// Starts and stops a real `capsule serve` for the tests: a free port (or the
// one asked for), a fresh temporary state directory, and on stop every
// sandbox deleted, SIGTERM, and the directory removed. Only the process
// started here is ever signalled.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const SDK_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export function capsuleBin() {
  const path = process.env.CAPSULE_BIN || join(REPO_ROOT, 'target', 'debug', 'capsule');
  if (!existsSync(path)) {
    throw new Error(
      `the Capsule server binary is missing at ${path}; build it with \`cargo build -p capsule\` in ${REPO_ROOT} or set CAPSULE_BIN`,
    );
  }
  return path;
}

/** Whether `capsule serve` of the binary under test knows `flag`. */
export function serverSupports(flag) {
  const out = spawnSync(capsuleBin(), ['serve', '--help'], { encoding: 'utf8' });
  return out.stdout.includes(flag);
}

function listenOn(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => {
      const { port: bound } = srv.address();
      srv.close(() => resolve(bound));
    });
  });
}

export function freePort() {
  return listenOn(0);
}

export async function portIsFree(port) {
  try {
    await listenOn(port);
    return true;
  } catch {
    return false;
  }
}

/**
 * Snapshots, forks, volumes and disk limits need btrfs storage, which needs
 * root. As root, ask for it outright: `--storage auto` would quietly fall
 * back to plain directories when btrfs cannot be set up (and those tests
 * would fail far from the cause), while `--storage btrfs` makes the server
 * refuse to start and say why.
 */
/** Runs `fn` with a fresh sandbox of `client` and deletes it afterwards. */
export async function withSandbox(client, options, fn) {
  const capsule = await client.create(options);
  try {
    return await fn(capsule);
  } finally {
    await capsule.delete().catch(() => {});
  }
}

export const STORAGE_ARGS = process.getuid?.() === 0 ? ['--storage', 'btrfs'] : [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class CapsuleServer {
  constructor({ port, args = [], apiKey } = {}) {
    this.requestedPort = port;
    this.args = args;
    this.apiKey = apiKey;
    this.proc = undefined;
  }

  async start(waitMs = 60_000) {
    this.port = this.requestedPort ?? (await freePort());
    this.url = `http://127.0.0.1:${this.port}`;
    this.tmp = mkdtempSync(join(tmpdir(), 'capsule-sdk-ts-'));
    // Sandbox processes run as other uids and must be able to reach the state.
    chmodSync(this.tmp, 0o755);
    this.stateDir = join(this.tmp, 'state');
    mkdirSync(this.stateDir);
    this.logPath = join(this.tmp, 'server.log');
    const log = openSync(this.logPath, 'a');
    this.proc = spawn(
      capsuleBin(),
      ['serve', '--listen', `127.0.0.1:${this.port}`, '--state-dir', this.stateDir, ...this.args],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    let exited = false;
    this.exitPromise = new Promise((resolve) => this.proc.once('exit', (code, signal) => {
      exited = true;
      resolve({ code, signal });
    }));
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline) {
      if (exited) {
        const text = this.log();
        this.cleanupDir();
        const { code } = await this.exitPromise;
        throw new Error(`capsule serve exited with ${code}:\n${text}`);
      }
      try {
        const r = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
        if (r.status === 200) return this;
      } catch {
        // not up yet
      }
      await sleep(100);
    }
    await this.stop();
    throw new Error(`capsule serve did not become healthy on ${this.url} within ${waitMs} ms`);
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** A bare JSON-RPC call, independent of the SDK under test. */
  async rpc(method, params = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    const r = await fetch(`${this.url}/rpc`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
    return r.json();
  }

  async sandboxIds() {
    const r = await this.rpc('sandbox.v1.list', {});
    return r.result.sandboxes.map((s) => s.id);
  }

  async stop() {
    if (!this.proc) return;
    const proc = this.proc;
    this.proc = undefined;
    if (proc.exitCode === null && proc.signalCode === null) {
      try {
        for (const id of await this.sandboxIds()) await this.rpc('sandbox.v1.delete', { id });
        await this.drainPools();
      } catch {
        // best effort
      }
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      await this.exitPromise;
      clearTimeout(timer);
    }
    this.cleanupDir();
  }

  /**
   * Empties the warm pools (`--pool`) and waits for their sandboxes to go.
   * Pooled sandboxes are not listed, so deleting the listed ones misses
   * them, and a server stopped with sandboxes left keeps them running (and
   * its storage mounted) for its next start.
   */
  async drainPools(waitMs = 30_000) {
    const pools = (await this.rpc('sandbox.v1.pools', {})).result?.pools ?? [];
    if (pools.length === 0) return;
    for (const pool of pools) await this.rpc('admin.v1.setPool', { template: pool.template, size: 0 });
    const sandboxes = join(this.stateDir, 'native', 'sandboxes');
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline) {
      if (!existsSync(sandboxes) || readdirSync(sandboxes).length === 0) return;
      await sleep(100);
    }
  }

  cleanupDir() {
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
