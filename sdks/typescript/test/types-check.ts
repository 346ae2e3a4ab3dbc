// Compile-time checks of the public types (tsc --noEmit; never run). Each
// line states how the API is meant to be used; `@ts-expect-error` lines must
// fail to compile.

import {
  Capsule,
  CapsuleClient,
  CapsuleError,
  SandboxNotFoundError,
  Terminal,
  type ExecResult,
  type FileEntry,
  type PauseResult,
  type PoolInfo,
  type SandboxInfo,
  type SandboxStats,
  type SnapshotInfo,
  type TemplateInfo,
  type TerminalCloseEvent,
  type VolumeInfo,
  type VolumeMount,
  type WriteResult,
} from 'capsule-sdk';

export async function usage(): Promise<void> {
  const client = new CapsuleClient({ baseUrl: 'http://localhost:8080', apiKey: 'k', timeoutMs: 5000 });
  const capsule: Capsule = await client.create({ template: 'python', ttlMs: 1, cpu: 0.5, memoryMb: 256, env: { A: 'b' }, metadata: { k: 'v' } });
  const byName: Capsule = await client.create('node');
  const again: Capsule = await client.get(capsule.id);
  const infos: SandboxInfo[] = await client.list({ metadata: { k: 'v' } });
  const templates: TemplateInfo[] = await client.templates();

  const r: ExecResult = await capsule.exec(['ls'], { timeoutMs: 1, env: {}, cwd: '/', stdin: '', user: 'root' });
  const exitCode: number = r.exitCode;
  const signal: number | undefined = r.signal;
  await capsule.exec('ls | wc -l');
  await capsule.run('print(1)', { timeoutMs: 1, env: {}, stdin: '' });
  // @ts-expect-error -- only "user" and "root" exist
  await capsule.exec('id', { user: 'admin' });

  const w: WriteResult = await capsule.writeFile('a', new Uint8Array([1]), { mode: 0o644 });
  await capsule.writeFile('b', 'text', { mode: '0600', user: 'root' });
  const bytes: Uint8Array = await capsule.readFile('a');
  const text: string = await capsule.readFileText('b');
  const entries: FileEntry[] = await capsule.listDir();
  const kind: 'file' | 'dir' | 'symlink' | 'other' = entries[0]!.type;
  const entry: FileEntry = await capsule.stat('a');
  await capsule.makeDir('d');
  await capsule.remove('d');
  const expires: Date = await capsule.setTimeout(60_000);

  const paused: PauseResult = await capsule.pause();
  const pausedState: 'running' | 'paused' = paused.state;
  const resumedAt: Date = (await capsule.resume()).expiresAt;
  const stats: SandboxStats = await capsule.stats();
  const cpuNs: number | undefined = stats.cpuNs;
  const memoryLimit: number = stats.memoryLimitBytes;
  const snap: SnapshotInfo = await capsule.snapshot({ name: 'ready' });
  await capsule.snapshot();
  const snapName: string | undefined = snap.name;
  const snaps: SnapshotInfo[] = await client.listSnapshots();
  await client.deleteSnapshot(snap.snapshotId);
  const forks: Capsule[] = await capsule.fork({ count: 2, ttlMs: 60_000, metadata: { k: 'v' } });
  await capsule.fork();
  const vol: VolumeInfo = await client.createVolume('data', 64);
  const usedBy: string[] = vol.usedBy;
  const vols: VolumeInfo[] = await client.listVolumes();
  await client.deleteVolume('data');
  const pools: PoolInfo[] = await client.pools();
  const mount: VolumeMount = { name: 'data', path: '/data', readOnly: true };
  await client.create({
    snapshot: 'ready',
    volumes: [mount, { name: 'other', path: '/other' }],
    diskMb: 1024,
    autoPauseMs: 60_000,
    pauseOnExpiry: true,
    runtime: 'native',
  });
  const runtime: string | undefined = infos[0]!.runtime;
  // @ts-expect-error -- a volume needs a path
  await client.create({ volumes: [{ name: 'data' }] });
  // @ts-expect-error -- the size is a number of MiB
  await client.createVolume('data', '64');

  const term: Terminal = capsule.connectTerminal({ cols: 120, rows: 40 });
  term.onmessage = (e) => {
    const data: string = e.data;
    void data;
  };
  term.onclose = (e: TerminalCloseEvent) => void e.reason;
  term.send('ls\n');
  term.resize(100, 30);
  const out: string = await term.expect(/\$ $/, { timeoutMs: 1000 });
  const closed: TerminalCloseEvent = await term.closed;
  term.close();
  await capsule.delete();

  try {
    await client.get('nope');
  } catch (e) {
    if (e instanceof SandboxNotFoundError) {
      const k: string | undefined = e.kind;
      const c: number | undefined = e.code;
      const d: Record<string, unknown> = e.data;
      void [k, c, d];
    }
    if (e instanceof CapsuleError) void e.message;
  }
  void [byName, again, infos, templates, exitCode, signal, w, bytes, text, kind, entry, expires, out, closed];
  void [pausedState, resumedAt, cpuNs, memoryLimit, snapName, snaps, forks, usedBy, vols, pools, runtime];
}
