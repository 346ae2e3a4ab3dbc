// Wire-level helpers shared by the client and the terminal. Not exported
// from the package.

import {
  CapsuleError,
  ProtocolError,
  UnauthorizedError,
  errorFromPayload,
} from './errors.js';
import type {
  ExecResult,
  FileEntry,
  PauseResult,
  PoolInfo,
  SandboxInfo,
  SandboxStats,
  SnapshotInfo,
  TemplateInfo,
  VolumeInfo,
  VolumeMount,
} from './types.js';

export const VERSION = '0.1.0';
export const DEFAULT_BASE_URL = 'http://localhost:8080';
export const DEFAULT_TIMEOUT_MS = 60_000;
/** The server's default `timeout_ms` for exec and run. */
export const SERVER_EXEC_TIMEOUT_MS = 30_000;
/** Extra time exec/run get on top of the command's own timeout. */
export const EXEC_GRACE_MS = 30_000;
/** Requests at least this large get a hint about the server's size limit. */
export const LARGE_REQUEST = 1 << 20;

type Json = Record<string, unknown>;

export function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function normalizeBaseUrl(baseUrl: string): string {
  const url = baseUrl.trim().replace(/\/+$/, '');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`baseUrl must be an http:// or https:// URL, got ${JSON.stringify(baseUrl)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(`baseUrl must be an http:// or https:// URL, got ${JSON.stringify(baseUrl)}`);
  }
  return url;
}

export function fullMethod(method: string): string {
  return method.includes('.') ? method : `sandbox.v1.${method}`;
}

/** Drops `undefined` members so they are not sent. */
export function compact(params: Json): Json {
  const out: Json = {};
  for (const [k, v] of Object.entries(params)) if (v !== undefined) out[k] = v;
  return out;
}

export function decodeResponse(status: number, text: string, baseUrl: string, method: string): unknown {
  let payload: unknown;
  try {
    payload = text === '' ? undefined : JSON.parse(text);
  } catch {
    payload = undefined;
  }
  if (isRecord(payload)) {
    if ('error' in payload) throw errorFromPayload(payload.error);
    if ('result' in payload) return payload.result;
  }
  // Not JSON-RPC: a proxy's error page, a wrong URL, another server...
  const detail =
    isRecord(payload) && typeof payload.message === 'string' && payload.message !== '' ? payload.message : text.slice(0, 200);
  const hint = status === 404 || status === 405 ? ' (is this a Capsule server?)' : '';
  throw new ProtocolError(
    `${fullMethod(method)}: the server at ${baseUrl} answered HTTP ${status} without a JSON-RPC response${hint}: ${JSON.stringify(detail)}`,
  );
}

/** The error for a terminal upgrade the server refused with HTTP `status`. */
export function handshakeError(status: number, body: string, url: string): CapsuleError {
  let payload: unknown;
  try {
    payload = JSON.parse(body);
  } catch {
    payload = undefined;
  }
  if (isRecord(payload) && isRecord(payload.error)) return errorFromPayload(payload.error);
  // Other shapes, e.g. {"code": 401, "message": "..."} from an auth layer.
  const message =
    isRecord(payload) && typeof payload.message === 'string' && payload.message !== ''
      ? payload.message
      : body.slice(0, 200);
  if (status === 401) {
    return new UnauthorizedError(`the server refused the terminal at ${url}: ${message}`, {
      kind: 'unauthorized',
      code: -32014,
      data: { kind: 'unauthorized' },
    });
  }
  return new ProtocolError(`the server refused the terminal at ${url} with HTTP ${status}: ${JSON.stringify(message)}`);
}

/** Describes a fetch failure: Node puts the useful part in `cause`. */
export function describeFailure(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    const text = current.message || (typeof code === 'string' ? code : '');
    if (text && !parts.includes(text)) parts.push(text);
    if (current instanceof AggregateError && current.errors.length > 0) current = current.errors[0];
    else current = current.cause;
  }
  return parts.length > 0 ? parts.join(': ') : String(error);
}

export function isTimeoutFailure(error: unknown): boolean {
  return error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError');
}

export function terminalUrl(baseUrl: string, id: string, cols: number, rows: number): string {
  const url = new URL(baseUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/terminal/${encodeURIComponent(id)}`;
  url.search = `?cols=${cols}&rows=${rows}`;
  return url.toString();
}

export function checkSize(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 4096) {
    throw new RangeError(`${name} must be an integer from 1 to 4096, got ${String(value)}`);
  }
  return value;
}

// -- base64, without relying on Node's Buffer (browsers have none) ----------

type BufferLike = {
  from(data: Uint8Array | string, encoding?: string): Uint8Array & { toString(encoding: string): string };
};

function nodeBuffer(): BufferLike | undefined {
  return (globalThis as { Buffer?: BufferLike }).Buffer;
}

export function toBase64(bytes: Uint8Array): string {
  const B = nodeBuffer();
  if (B) return B.from(bytes).toString('base64');
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function fromBase64(text: string): Uint8Array {
  const B = nodeBuffer();
  if (B) return new Uint8Array(B.from(text, 'base64'));
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function toBytes(content: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof content === 'string') return new TextEncoder().encode(content);
  if (content instanceof Uint8Array) return content;
  if (content instanceof ArrayBuffer) return new Uint8Array(content);
  throw new TypeError(`file content must be a string, Uint8Array or ArrayBuffer, got ${typeof content}`);
}

// -- results, from the wire's snake_case to camelCase ------------------------

export function toExecResult(r: Json): ExecResult {
  const out: ExecResult = {
    stdout: r.stdout as string,
    stderr: r.stderr as string,
    exitCode: r.exit_code as number,
    timedOut: r.timed_out as boolean,
    durationMs: r.duration_ms as number,
    stdoutTruncated: Boolean(r.stdout_truncated),
    stderrTruncated: Boolean(r.stderr_truncated),
  };
  if (typeof r.signal === 'number') out.signal = r.signal;
  return out;
}

export function toFileEntry(e: Json): FileEntry {
  const out: FileEntry = {
    name: e.name as string,
    path: e.path as string,
    type: e.type as FileEntry['type'],
    size: e.size as number,
    mode: e.mode as number,
    modifiedAt: new Date(e.modified_at as string),
  };
  if (typeof e.symlink_target === 'string') out.symlinkTarget = e.symlink_target;
  return out;
}

export function toSandboxInfo(s: Json): SandboxInfo {
  const out: SandboxInfo = {
    id: s.id as string,
    template: s.template as string,
    state: s.state as SandboxInfo['state'],
    createdAt: new Date(s.created_at as string),
    expiresAt: new Date(s.expires_at as string),
    cpu: s.cpu as number,
    memoryMb: s.memory_mb as number,
    metadata: { ...((s.metadata as Record<string, string> | undefined) ?? {}) },
  };
  if (typeof s.error === 'string') out.error = s.error;
  if (typeof s.runtime === 'string' && s.runtime !== '') out.runtime = s.runtime;
  return out;
}

export function toTemplateInfo(t: Json): TemplateInfo {
  const out: TemplateInfo = {
    name: t.name as string,
    description: (t.description as string | undefined) ?? '',
    available: Boolean(t.available),
    run: [...((t.run as string[] | undefined) ?? [])],
  };
  if (typeof t.reason === 'string') out.reason = t.reason;
  return out;
}

export function toPauseResult(r: Json): PauseResult {
  return { id: r.id as string, state: r.state as PauseResult['state'], expiresAt: new Date(r.expires_at as string) };
}

export function toSnapshotInfo(s: Json): SnapshotInfo {
  const out: SnapshotInfo = {
    snapshotId: s.snapshot_id as string,
    source: s.source as string,
    template: s.template as string,
    createdAt: new Date(s.created_at as string),
    sizeBytes: s.size_bytes as number,
  };
  if (typeof s.name === 'string') out.name = s.name;
  return out;
}

export function toVolumeInfo(v: Json): VolumeInfo {
  return {
    name: v.name as string,
    sizeBytes: v.size_bytes as number,
    createdAt: new Date(v.created_at as string),
    usedBy: [...((v.used_by as string[] | undefined) ?? [])],
  };
}

const OPTIONAL_STATS: readonly (readonly [string, keyof SandboxStats])[] = [
  ['cpu_ns', 'cpuNs'],
  ['memory_bytes', 'memoryBytes'],
  ['memory_peak_bytes', 'memoryPeakBytes'],
  ['pids', 'pids'],
  ['disk_bytes', 'diskBytes'],
  ['disk_limit_bytes', 'diskLimitBytes'],
  ['network_rx_bytes', 'networkRxBytes'],
  ['network_tx_bytes', 'networkTxBytes'],
];

export function toSandboxStats(s: Json): SandboxStats {
  const out: SandboxStats = {
    id: s.id as string,
    state: s.state as SandboxStats['state'],
    memoryLimitBytes: s.memory_limit_bytes as number,
    pidsLimit: s.pids_limit as number,
  };
  for (const [wire, key] of OPTIONAL_STATS) {
    const value = s[wire];
    if (typeof value === 'number') (out as unknown as Record<string, number>)[key] = value;
  }
  return out;
}

export function toPoolInfo(p: Json): PoolInfo {
  return { template: p.template as string, size: p.size as number, ready: p.ready as number };
}

/** `create`'s `volumes`, in the wire's snake_case. */
export function volumesParam(volumes: readonly VolumeMount[] | undefined): Json[] | undefined {
  if (volumes === undefined || volumes.length === 0) return undefined;
  return volumes.map((v) => {
    if (!isRecord(v) || typeof v.name !== 'string' || typeof v.path !== 'string') {
      throw new TypeError(`a volume must be { name, path, readOnly? }, got ${JSON.stringify(v)}`);
    }
    return { name: v.name, path: v.path, read_only: v.readOnly ?? false };
  });
}
