/** Who a process or file operation runs as inside the sandbox. */
export type SandboxUser = 'user' | 'root';

/** What a command (`exec`) or a piece of code (`run`) did. */
export interface ExecResult {
  /** Standard output, decoded as UTF-8 (invalid bytes replaced). */
  stdout: string;
  /** Standard error, decoded the same way. */
  stderr: string;
  /** The exit status; `-1` when a signal ended the process. */
  exitCode: number;
  /** True when the command ran past its timeout and was killed. */
  timedOut: boolean;
  /** How long it ran, in milliseconds. */
  durationMs: number;
  /** The signal that ended the process, if one did. */
  signal?: number;
  /** True when stdout passed the server's output cap and was cut. */
  stdoutTruncated: boolean;
  /** True when stderr passed the server's output cap and was cut. */
  stderrTruncated: boolean;
}

/** A file, directory or link in a sandbox. */
export interface FileEntry {
  /** The last component of the path. */
  name: string;
  /** The absolute path in the sandbox. */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  /** Size in bytes. */
  size: number;
  /** Permission bits (`0o644` is 420). */
  mode: number;
  modifiedAt: Date;
  /** Where a symlink points, for symlinks. */
  symlinkTarget?: string;
}

/** Where `writeFile` wrote (absolute path) and how many bytes. */
export interface WriteResult {
  path: string;
  size: number;
}

/** What the server knows about a sandbox. */
export interface SandboxInfo {
  id: string;
  template: string;
  state: 'creating' | 'running' | 'paused' | 'stopping' | 'deleted' | 'failed';
  createdAt: Date;
  expiresAt: Date;
  /** CPU cores it may use. */
  cpu: number;
  /** Memory limit in MiB. */
  memoryMb: number;
  metadata: Record<string, string>;
  /** Why it failed, when `state` is `"failed"`. */
  error?: string;
  /** The isolation backend it runs on (`"native"`, `"gvisor"`, ...), when the server says. */
  runtime?: string;
}

/** A template the server knows. */
export interface TemplateInfo {
  /** The name to pass to `create`. */
  name: string;
  description: string;
  /** Whether this server can run it. */
  available: boolean;
  /** Why it is unavailable, when it is. */
  reason?: string;
  /** How `run` executes code, e.g. `["python3", "-c"]`. */
  run: string[];
}

/** The answer of `GET /health`. */
export interface HealthInfo {
  status: string;
  version: string;
  backend: string;
  sandboxes: number;
  [key: string]: unknown;
}

export interface ClientOptions {
  /** Where the server listens (default `http://localhost:8080`). */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer <apiKey>` when given. */
  apiKey?: string;
  /**
   * Milliseconds to wait for an answer (default 60000). `exec` and `run`
   * wait longer when the command's own timeout needs it.
   */
  timeoutMs?: number;
}

export interface CreateOptions {
  /** `"base"` (default), `"python"`, `"node"`, ...; with `snapshot`, the snapshot's. */
  template?: string;
  /** Time to live; the server deletes the sandbox after it (default 10 minutes). */
  ttlMs?: number;
  /** CPU cores (fractions allowed). */
  cpu?: number;
  /** Memory limit in MiB. */
  memoryMb?: number;
  /** Environment variables for every command. */
  env?: Record<string, string>;
  /** Free-form labels, usable as a filter in `list`. */
  metadata?: Record<string, string>;
  /**
   * `"none"` (default), `"egress"`, or `{ mode: "egress", allow, secrets }`
   * (see docs/network.md).
   */
  network?: string | NetworkConfig;
  /**
   * Start from this snapshot (its id or name, see `Capsule.snapshot`)
   * instead of empty files. The template is then the snapshot's: leave
   * `template` out or give the same one.
   */
  snapshot?: string;
  /** Volumes to mount (see `CapsuleClient.createVolume`); at most 16. */
  volumes?: VolumeMount[];
  /** Disk limit of the sandbox's own files in MiB (at least 16; enforced with btrfs storage). */
  diskMb?: number;
  /** Pause after this long without calls (at least 1000 ms); the next call resumes it. */
  autoPauseMs?: number;
  /** At its end time, pause instead of being deleted; a later call resumes it with a fresh time to live. */
  pauseOnExpiry?: boolean;
  /**
   * The isolation backend: `"native"` (default) or an OCI runtime the
   * server enabled (`"gvisor"`, `"runc"`, `"crun"`).
   */
  runtime?: string;
}

/** A volume to mount into a new sandbox. */
export interface VolumeMount {
  /** The volume's name. */
  name: string;
  /** Where it appears: an absolute path, not `/` and not under `/proc`, `/sys`, `/dev`, `/tmp` or `/run/capsule`. */
  path: string;
  /** Mount it read-only (default false), the safe way to share one volume. */
  readOnly?: boolean;
}

/** What `pause` and `resume` report. */
export interface PauseResult {
  id: string;
  /** `"paused"` after `pause`, `"running"` after `resume`. */
  state: 'running' | 'paused';
  /** Its end time as it stands (a resume moves it later by the time spent paused). */
  expiresAt: Date;
}

/** A snapshot: a sandbox's files at one moment, to create sandboxes from. */
export interface SnapshotInfo {
  /** Its id, e.g. `"snap-x82kq0ma"`. */
  snapshotId: string;
  /** The name it was given, if any. */
  name?: string;
  /** The id of the sandbox it was taken of. */
  source: string;
  /** That sandbox's template, and so that of sandboxes made from it. */
  template: string;
  createdAt: Date;
  /** Bytes of its own files (beyond the template's). */
  sizeBytes: number;
}

/** A named persistent volume. */
export interface VolumeInfo {
  name: string;
  /** Its size limit in bytes. */
  sizeBytes: number;
  createdAt: Date;
  /** Ids of the running sandboxes that mount it. */
  usedBy: string[];
}

/**
 * A sandbox's resource use now, with its limits. Figures the server's
 * backend cannot measure are absent.
 */
export interface SandboxStats {
  id: string;
  state: 'running' | 'paused';
  /** CPU time used since it started, in nanoseconds. */
  cpuNs?: number;
  memoryBytes?: number;
  /** The most memory it has used. */
  memoryPeakBytes?: number;
  memoryLimitBytes: number;
  /** Processes running. */
  pids?: number;
  pidsLimit: number;
  /** Bytes of its own files. */
  diskBytes?: number;
  /** Its disk limit, when one is enforced. */
  diskLimitBytes?: number;
  /** Bytes received, where it has a network. */
  networkRxBytes?: number;
  /** Bytes sent, where it has a network. */
  networkTxBytes?: number;
}

/** A warm pool of ready sandboxes of one template. */
export interface PoolInfo {
  template: string;
  /** How many ready sandboxes the server keeps. */
  size: number;
  /** How many are ready now. */
  ready: number;
}

export interface SnapshotOptions {
  /** A name to create from, unique among the snapshots: 1 to 63 of `a-z 0-9 . _ -`. */
  name?: string;
}

export interface ForkOptions {
  /** How many copies, 1 to 64 (default 1). */
  count?: number;
  /** Time to live of the copies (default: the source's remaining time). */
  ttlMs?: number;
  /** Added to the source's metadata on each copy. */
  metadata?: Record<string, string>;
}

/** Egress through Capsule's proxy: the allow-list and secret headers. */
export interface NetworkConfig {
  mode: 'none' | 'egress';
  /** Host names, `*.suffix` wildcards and CIDRs; empty allows nothing. */
  allow?: string[];
  /** Headers the proxy adds to plain-HTTP requests for `host`. */
  secrets?: { host: string; header: string; value: string }[];
}

export interface ListOptions {
  /** Only sandboxes whose metadata holds every one of these pairs. */
  metadata?: Record<string, string>;
}

export interface RunOptions {
  /** Kill the code after this long (server default 30 s); the result then has `timedOut: true`. */
  timeoutMs?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Text fed to standard input. */
  stdin?: string;
}

export interface ExecOptions extends RunOptions {
  /** Working directory (default `/workspace`). */
  cwd?: string;
  /** `"user"` (default, uid 1000) or `"root"`. */
  user?: SandboxUser;
}

export interface WriteFileOptions {
  /** `0o755` or `"0755"`; default 0644. */
  mode?: number | string;
  user?: SandboxUser;
}

export interface PathOptions {
  user?: SandboxUser;
}

export interface TerminalOptions {
  /** Columns (default 80). */
  cols?: number;
  /** Rows (default 24). */
  rows?: number;
}

export interface CallOptions {
  /** Overrides the client's timeout for this call. */
  timeoutMs?: number;
}
