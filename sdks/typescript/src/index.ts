/**
 * TypeScript client for Capsule, the self-hosted sandbox platform for AI agents.
 *
 * ```ts
 * import { CapsuleClient } from 'capsule-sdk';
 *
 * const client = new CapsuleClient({ baseUrl: 'http://localhost:8080' });
 * const capsule = await client.create({ template: 'python' });
 * const result = await capsule.run('print("Hello, Capsule!")');
 * await capsule.delete();
 * ```
 *
 * @packageDocumentation
 */

export { CapsuleClient, Capsule } from './client.js';
export type { CapsuleData } from './client.js';
export { Terminal } from './terminal.js';
export type {
  TerminalCloseEvent,
  TerminalErrorEvent,
  TerminalEventMap,
  TerminalMessageEvent,
  TerminalOpenEvent,
} from './terminal.js';
export * from './errors.js';
export type {
  CallOptions,
  ClientOptions,
  CreateOptions,
  ExecOptions,
  ExecResult,
  FileEntry,
  ForkOptions,
  HealthInfo,
  ListOptions,
  NetworkConfig,
  PathOptions,
  PauseResult,
  PoolInfo,
  RunOptions,
  SandboxInfo,
  SandboxStats,
  SandboxUser,
  SnapshotInfo,
  SnapshotOptions,
  TemplateInfo,
  TerminalOptions,
  VolumeInfo,
  VolumeMount,
  WriteFileOptions,
  WriteResult,
} from './types.js';
export { VERSION } from './internal.js';
