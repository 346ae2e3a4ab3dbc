import { CapsuleConnectionError, CapsuleTimeoutError } from './errors.js';
import {
  DEFAULT_BASE_URL,
  DEFAULT_TIMEOUT_MS,
  EXEC_GRACE_MS,
  LARGE_REQUEST,
  SERVER_EXEC_TIMEOUT_MS,
  VERSION,
  checkSize,
  compact,
  decodeResponse,
  describeFailure,
  fromBase64,
  fullMethod,
  isTimeoutFailure,
  normalizeBaseUrl,
  terminalUrl,
  toBase64,
  toBytes,
  toExecResult,
  toFileEntry,
  toPauseResult,
  toPoolInfo,
  toSandboxInfo,
  toSandboxStats,
  toSnapshotInfo,
  toTemplateInfo,
  toVolumeInfo,
  volumesParam,
} from './internal.js';
import { Terminal } from './terminal.js';
import type {
  CallOptions,
  ClientOptions,
  CreateOptions,
  ExecOptions,
  ExecResult,
  FileEntry,
  ForkOptions,
  HealthInfo,
  ListOptions,
  PathOptions,
  PauseResult,
  PoolInfo,
  RunOptions,
  SandboxInfo,
  SandboxStats,
  SnapshotInfo,
  SnapshotOptions,
  TemplateInfo,
  TerminalOptions,
  VolumeInfo,
  WriteFileOptions,
  WriteResult,
} from './types.js';

type Json = Record<string, unknown>;

/**
 * A connection to a Capsule server.
 *
 * ```ts
 * const client = new CapsuleClient({ baseUrl: 'http://localhost:8080' });
 * const capsule = await client.create({ template: 'python' });
 * ```
 */
export class CapsuleClient {
  /** The server's URL, without a trailing slash. */
  readonly baseUrl: string;
  /** Milliseconds to wait for an answer (exec/run may wait longer). */
  readonly timeoutMs: number;
  private readonly headers: Record<string, string>;
  private nextId = 0;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = normalizeBaseUrl(options.baseUrl ?? DEFAULT_BASE_URL);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    if (options.apiKey) this.headers.Authorization = `Bearer ${options.apiKey}`;
  }

  /**
   * Calls a JSON-RPC method and resolves with its `result`. `method` may be
   * short (`"exec"`) or full (`"sandbox.v1.exec"`). Rejects with the
   * {@link CapsuleError} subclass matching the kind the server reports.
   */
  async call<T = unknown>(method: string, params: Json = {}, options: CallOptions = {}): Promise<T> {
    const body = JSON.stringify({ jsonrpc: '2.0', id: ++this.nextId, method: fullMethod(method), params });
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const text = await this.fetchText(`${this.baseUrl}/rpc`, { method: 'POST', headers: this.headers, body }, timeoutMs, method, body.length);
    return decodeResponse(text.status, text.body, this.baseUrl, method) as T;
  }

  /** `GET /health`: `{ status, version, backend, sandboxes }`. */
  async health(): Promise<HealthInfo> {
    const r = await this.fetchText(`${this.baseUrl}/health`, { method: 'GET', headers: this.headers }, this.timeoutMs, 'health', 0);
    return JSON.parse(r.body) as HealthInfo;
  }

  /**
   * Creates a sandbox. Pass options, or just a template name.
   *
   * ```ts
   * const capsule = await client.create({ template: 'python', ttlMs: 120_000 });
   * const restored = await client.create({ snapshot: 'repo-ready' });
   * const withData = await client.create({ volumes: [{ name: 'datasets', path: '/data', readOnly: true }] });
   * ```
   */
  async create(options: CreateOptions | string = {}): Promise<Capsule> {
    const o: CreateOptions = typeof options === 'string' ? { template: options } : options;
    const result = await this.call<Json>(
      'create',
      compact({
        // Left out, the server uses "base", or the snapshot's template.
        template: o.template,
        ttl_ms: o.ttlMs,
        cpu: o.cpu,
        memory_mb: o.memoryMb,
        env: o.env && Object.keys(o.env).length > 0 ? o.env : undefined,
        metadata: o.metadata && Object.keys(o.metadata).length > 0 ? o.metadata : undefined,
        network: o.network,
        snapshot: o.snapshot,
        volumes: volumesParam(o.volumes),
        disk_mb: o.diskMb,
        auto_pause_ms: o.autoPauseMs,
        pause_on_expiry: o.pauseOnExpiry,
        runtime: o.runtime,
      }),
    );
    return Capsule.fromWire(this, result);
  }

  /** The sandbox with this id. Rejects with `SandboxNotFoundError` (or `SandboxExpiredError`). */
  async get(id: string): Promise<Capsule> {
    return Capsule.fromWire(this, await this.call<Json>('get', { id }));
  }

  /** The live sandboxes, optionally only those whose metadata holds every given pair. */
  async list(options: ListOptions = {}): Promise<SandboxInfo[]> {
    const result = await this.call<{ sandboxes: Json[] }>('list', compact({ metadata: options.metadata }));
    return result.sandboxes.map(toSandboxInfo);
  }

  /** The templates, and whether this server can run each. */
  async templates(): Promise<TemplateInfo[]> {
    const result = await this.call<{ templates: Json[] }>('templates', {});
    return result.templates.map(toTemplateInfo);
  }

  /** The warm pools: per template, how many ready sandboxes the server keeps and how many are ready now. */
  async pools(): Promise<PoolInfo[]> {
    const result = await this.call<{ pools: Json[] }>('pools', {});
    return result.pools.map(toPoolInfo);
  }

  /** The snapshots (of this tenant), oldest first. Take one with {@link Capsule.snapshot}. */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    const result = await this.call<{ snapshots: Json[] }>('listSnapshots', {});
    return result.snapshots.map(toSnapshotInfo);
  }

  /**
   * Deletes a snapshot by id or name; sandboxes made from it keep their
   * files. Rejects with `InvalidParamsError` when there is no such snapshot.
   */
  async deleteSnapshot(snapshot: string): Promise<void> {
    await this.call('deleteSnapshot', { snapshot });
  }

  /**
   * Makes a named persistent volume of at most `sizeMb` MiB, to mount into
   * sandboxes with `create({ volumes: [{ name, path }] })`. `name` is 1 to
   * 63 of `a-z 0-9 . _ -`; `AlreadyExistsError` if it is taken.
   */
  async createVolume(name: string, sizeMb: number): Promise<VolumeInfo> {
    return toVolumeInfo(await this.call<Json>('createVolume', { name, size_mb: sizeMb }));
  }

  /** The volumes (of this tenant). */
  async listVolumes(): Promise<VolumeInfo[]> {
    const result = await this.call<{ volumes: Json[] }>('listVolumes', {});
    return result.volumes.map(toVolumeInfo);
  }

  /**
   * Deletes a volume and its files. Rejects with `InvalidParamsError` when
   * there is no such volume, or a running sandbox mounts it (`data.used_by`
   * lists them).
   */
  async deleteVolume(name: string): Promise<void> {
    await this.call('deleteVolume', { name });
  }

  /** @internal Headers for the terminal's WebSocket handshake. */
  terminalHeaders(): Record<string, string> {
    const h: Record<string, string> = { 'User-Agent': `capsule-sdk-typescript/${VERSION}` };
    if (this.headers.Authorization) h.Authorization = this.headers.Authorization;
    return h;
  }

  private async fetchText(
    url: string,
    init: { method: string; headers: Record<string, string>; body?: string },
    timeoutMs: number,
    method: string,
    bodySize: number,
  ): Promise<{ status: number; body: string }> {
    const signal = AbortSignal.timeout(timeoutMs);
    try {
      const response = await fetch(url, { ...init, signal });
      return { status: response.status, body: await response.text() };
    } catch (e) {
      if (isTimeoutFailure(e)) {
        throw new CapsuleTimeoutError(
          `the Capsule server at ${this.baseUrl} did not answer ${method === 'health' ? '/health' : fullMethod(method)} within ${timeoutMs} ms`,
          { cause: e },
        );
      }
      let message = `cannot reach the Capsule server at ${this.baseUrl}: ${describeFailure(e)}`;
      if (bodySize >= LARGE_REQUEST) {
        message += ` (the connection dropped during a ${bodySize}-byte ${fullMethod(method)} request; the server may have refused it as larger than it accepts, see \`capsule serve --max-request-bytes\`)`;
      }
      throw new CapsuleConnectionError(message, { cause: e });
    }
  }
}

function execTimeout(client: CapsuleClient, timeoutMs: number | undefined): number {
  return Math.max(client.timeoutMs, (timeoutMs ?? SERVER_EXEC_TIMEOUT_MS) + EXEC_GRACE_MS);
}

function nonEmpty(env: Record<string, string> | undefined): Record<string, string> | undefined {
  return env && Object.keys(env).length > 0 ? env : undefined;
}

/** Identity and times of a sandbox, as `create` and `get` report them. */
export interface CapsuleData {
  id: string;
  template: string;
  createdAt: Date;
  expiresAt: Date;
}

/**
 * One sandbox. Get one from {@link CapsuleClient.create} or
 * {@link CapsuleClient.get}.
 */
export class Capsule {
  readonly client: CapsuleClient;
  /** The sandbox id (8 characters, `[a-z0-9]`). */
  readonly id: string;
  /** The template it was created from. */
  readonly template: string;
  readonly createdAt: Date;
  /** When it expires, as last seen (`setTimeout` and `info` refresh it). */
  expiresAt: Date;
  private readonly terminals = new Set<Terminal>();

  constructor(client: CapsuleClient, data: CapsuleData) {
    this.client = client;
    this.id = data.id;
    this.template = data.template;
    this.createdAt = data.createdAt;
    this.expiresAt = data.expiresAt;
  }

  /** @internal */
  static fromWire(client: CapsuleClient, r: Json): Capsule {
    return new Capsule(client, {
      id: r.id as string,
      template: r.template as string,
      createdAt: new Date(r.created_at as string),
      expiresAt: new Date(r.expires_at as string),
    });
  }

  /** The sandbox's current state, from the server. */
  async info(): Promise<SandboxInfo> {
    const info = toSandboxInfo(await this.client.call<Json>('get', { id: this.id }));
    this.expiresAt = info.expiresAt;
    return info;
  }

  /**
   * Runs `code` with the template's interpreter (`python3 -c` for python,
   * `node -e` for node, `sh -c` for base). A non-zero exit is not an error;
   * check `exitCode`.
   */
  async run(code: string, options: RunOptions = {}): Promise<ExecResult> {
    const params = compact({ id: this.id, code, timeout_ms: options.timeoutMs, env: nonEmpty(options.env), stdin: options.stdin });
    const r = await this.client.call<Json>('run', params, { timeoutMs: execTimeout(this.client, options.timeoutMs) });
    return toExecResult(r);
  }

  /**
   * Runs a command: an array is an argv run as is; a string is run by
   * `/bin/sh -c`.
   *
   * ```ts
   * await capsule.exec(['ls', '-l']);
   * await capsule.exec('ls | wc -l', { cwd: '/tmp', timeoutMs: 5000 });
   * ```
   */
  async exec(cmd: string | readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const params = compact({
      id: this.id,
      cmd: typeof cmd === 'string' ? cmd : [...cmd],
      timeout_ms: options.timeoutMs,
      env: nonEmpty(options.env),
      cwd: options.cwd,
      stdin: options.stdin,
      user: options.user,
    });
    const r = await this.client.call<Json>('exec', params, { timeoutMs: execTimeout(this.client, options.timeoutMs) });
    return toExecResult(r);
  }

  /**
   * Writes a file, creating parent directories. Strings are written as
   * UTF-8. Relative paths are relative to `/workspace`.
   */
  async writeFile(path: string, content: string | Uint8Array | ArrayBuffer, options: WriteFileOptions = {}): Promise<WriteResult> {
    const params = compact({ id: this.id, path, content: toBase64(toBytes(content)), mode: options.mode, user: options.user });
    const r = await this.client.call<{ path: string; size: number }>('writeFile', params);
    return { path: r.path, size: r.size };
  }

  /** A file's bytes. */
  async readFile(path: string, options: PathOptions = {}): Promise<Uint8Array> {
    const r = await this.client.call<{ content: string }>('readFile', compact({ id: this.id, path, user: options.user }));
    return fromBase64(r.content);
  }

  /** A file's content decoded as UTF-8. */
  async readFileText(path: string, options: PathOptions = {}): Promise<string> {
    return new TextDecoder().decode(await this.readFile(path, options));
  }

  /** A directory's entries (default `/workspace`). */
  async listDir(path = '/workspace', options: PathOptions = {}): Promise<FileEntry[]> {
    const r = await this.client.call<{ entries: Json[] }>('listDir', compact({ id: this.id, path, user: options.user }));
    return r.entries.map(toFileEntry);
  }

  /** One path (a symlink itself, not its target). */
  async stat(path: string, options: PathOptions = {}): Promise<FileEntry> {
    const r = await this.client.call<{ entry: Json }>('stat', compact({ id: this.id, path, user: options.user }));
    return toFileEntry(r.entry);
  }

  /** Creates a directory and its parents; `AlreadyExistsError` if it exists. */
  async makeDir(path: string, options: PathOptions = {}): Promise<FileEntry> {
    const r = await this.client.call<{ entry: Json }>('makeDir', compact({ id: this.id, path, user: options.user }));
    return toFileEntry(r.entry);
  }

  /** Removes a file, or a directory with everything in it. */
  async remove(path: string, options: PathOptions = {}): Promise<void> {
    await this.client.call('remove', compact({ id: this.id, path, user: options.user }));
  }

  /** Gives the sandbox a new time to live, counted from now; resolves with the new expiry. */
  async setTimeout(ttlMs: number): Promise<Date> {
    const r = await this.client.call<{ expires_at: string }>('setTimeout', { id: this.id, ttl_ms: ttlMs });
    this.expiresAt = new Date(r.expires_at);
    return this.expiresAt;
  }

  /**
   * Freezes every process of the sandbox; memory, files and processes stay
   * as they are. Any later call that needs the sandbox (exec, files,
   * terminal) resumes it. Pausing a paused sandbox does nothing.
   */
  async pause(): Promise<PauseResult> {
    const r = toPauseResult(await this.client.call<Json>('pause', { id: this.id }));
    this.expiresAt = r.expiresAt;
    return r;
  }

  /** Thaws a paused sandbox ahead of the next call (calls resume it anyway). */
  async resume(): Promise<PauseResult> {
    const r = toPauseResult(await this.client.call<Json>('resume', { id: this.id }));
    this.expiresAt = r.expiresAt;
    return r;
  }

  /** The sandbox's resource use now (CPU time, memory, processes, disk), with its limits. */
  async stats(): Promise<SandboxStats> {
    return toSandboxStats(await this.client.call<Json>('stats', { id: this.id }));
  }

  /**
   * Captures the sandbox's files (not memory or processes) as a snapshot to
   * create new sandboxes from (`client.create({ snapshot })`). The sandbox
   * is frozen for the moment of the capture, then goes on. A taken `name`
   * rejects with `AlreadyExistsError`.
   */
  async snapshot(options: SnapshotOptions = {}): Promise<SnapshotInfo> {
    return toSnapshotInfo(await this.client.call<Json>('snapshot', compact({ id: this.id, name: options.name })));
  }

  /**
   * Makes `count` (default 1) new sandboxes whose files start as copies of
   * this one's now, with the same template, limits, environment, metadata
   * and volumes. All or nothing.
   */
  async fork(options: ForkOptions = {}): Promise<Capsule[]> {
    const params = compact({
      id: this.id,
      count: options.count ?? 1,
      ttl_ms: options.ttlMs,
      metadata: nonEmpty(options.metadata),
    });
    const r = await this.client.call<{ sandboxes: Json[] }>('fork', params);
    return r.sandboxes.map((s) => Capsule.fromWire(this.client, s));
  }

  /**
   * Opens an interactive shell in a `cols` x `rows` terminal (default 80x24).
   * Returns at once; see {@link Terminal} (input sent before the connection
   * opens is queued).
   */
  connectTerminal(options: TerminalOptions = {}): Terminal {
    const cols = checkSize('cols', options.cols ?? 80);
    const rows = checkSize('rows', options.rows ?? 24);
    const url = terminalUrl(this.client.baseUrl, this.id, cols, rows);
    const terminal = new Terminal(url, this.client.baseUrl, this.client.terminalHeaders(), (t) => this.terminals.delete(t));
    this.terminals.add(terminal);
    return terminal;
  }

  /** Deletes the sandbox and closes the terminals this object opened. */
  async delete(): Promise<void> {
    try {
      await this.client.call('delete', { id: this.id });
    } finally {
      for (const terminal of [...this.terminals]) terminal.close();
    }
  }
}
