/**
 * Errors raised by the Capsule SDK.
 *
 * Every error the server reports carries a stable `kind` (`data.kind` in the
 * JSON-RPC error). The SDK throws one class per kind, all extending
 * {@link CapsuleError}, so callers can test with `instanceof`:
 *
 * ```ts
 * try {
 *   await capsule.readFile('missing.txt');
 * } catch (e) {
 *   if (e instanceof FileNotFoundInSandboxError) { ... }
 * }
 * ```
 *
 * Problems reaching the server throw {@link CapsuleConnectionError} or
 * {@link CapsuleTimeoutError} instead.
 */

export interface CapsuleErrorOptions {
  /** The machine-readable kind, e.g. `"sandbox_not_found"`. */
  kind?: string | undefined;
  /** The JSON-RPC error code, e.g. `-32001`. */
  code?: number | undefined;
  /** The error's `data` object (holds `kind`, often `id` or `path`). */
  data?: Record<string, unknown> | undefined;
  cause?: unknown;
}

/** Base class of every error the SDK throws. */
export class CapsuleError extends Error {
  override name = 'CapsuleError';
  /** The machine-readable kind, or `undefined` for errors not from the server. */
  readonly kind: string | undefined;
  /** The JSON-RPC error code, when there was one. */
  readonly code: number | undefined;
  /** The error's `data` object; empty when there was none. */
  readonly data: Record<string, unknown>;

  constructor(message: string, options: CapsuleErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = options.kind;
    this.code = options.code;
    this.data = { ...(options.data ?? {}) };
  }
}

/** The server could not be reached, or the connection broke. */
export class CapsuleConnectionError extends CapsuleError {
  override name = 'CapsuleConnectionError';
}

/** The server (or a terminal) did not answer in time. */
export class CapsuleTimeoutError extends CapsuleError {
  override name = 'CapsuleTimeoutError';
}

/** The terminal is closed (usually because its shell exited). */
export class TerminalClosedError extends CapsuleError {
  override name = 'TerminalClosedError';
  /** The WebSocket close code (1000 when the shell exited). */
  readonly closeCode: number | undefined;
  /** The close reason, e.g. `"exit status 0"`. */
  readonly reason: string;

  constructor(message: string, closeCode: number | undefined, reason: string) {
    super(message);
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

/**
 * The server did not understand the request (`parse_error`,
 * `invalid_request`, `method_not_found`) or sent something that is not a
 * JSON-RPC response. Usually an SDK/server version mismatch.
 */
export class ProtocolError extends CapsuleError {
  override name = 'ProtocolError';
}
/** A parameter was missing, misspelt or out of range (`invalid_params`). */
export class InvalidParamsError extends CapsuleError {
  override name = 'InvalidParamsError';
}
/** The server failed unexpectedly (`internal`). */
export class InternalServerError extends CapsuleError {
  override name = 'InternalServerError';
}
/** No sandbox has this id (`sandbox_not_found`). */
export class SandboxNotFoundError extends CapsuleError {
  override name = 'SandboxNotFoundError';
}
/** The sandbox reached the end of its time to live (`sandbox_expired`). */
export class SandboxExpiredError extends CapsuleError {
  override name = 'SandboxExpiredError';
}
/** The sandbox exists but is not running (`sandbox_not_running`). */
export class SandboxNotRunningError extends CapsuleError {
  override name = 'SandboxNotRunningError';
}
/** No template has this name (`template_not_found`). */
export class TemplateNotFoundError extends CapsuleError {
  override name = 'TemplateNotFoundError';
}
/** The template exists but this server cannot run it (`template_unavailable`). */
export class TemplateUnavailableError extends CapsuleError {
  override name = 'TemplateUnavailableError';
}
/** The path does not exist in the sandbox (`file_not_found`). */
export class FileNotFoundInSandboxError extends CapsuleError {
  override name = 'FileNotFoundInSandboxError';
}
/** The path climbs out of the sandbox (`path_outside_sandbox`). */
export class PathOutsideSandboxError extends CapsuleError {
  override name = 'PathOutsideSandboxError';
}
/** A directory was expected (`not_a_directory`). */
export class NotADirectoryInSandboxError extends CapsuleError {
  override name = 'NotADirectoryInSandboxError';
}
/** A file was expected but the path is a directory (`is_a_directory`). */
export class IsADirectoryInSandboxError extends CapsuleError {
  override name = 'IsADirectoryInSandboxError';
}
/** The path already exists (`already_exists`). */
export class AlreadyExistsError extends CapsuleError {
  override name = 'AlreadyExistsError';
}
/** The sandbox user may not do this (`permission_denied`). */
export class PermissionDeniedError extends CapsuleError {
  override name = 'PermissionDeniedError';
}
/** The request was larger than the server accepts (`payload_too_large`). */
export class PayloadTooLargeError extends CapsuleError {
  override name = 'PayloadTooLargeError';
}
/** A server limit was reached, e.g. too many sandboxes (`quota_exceeded`). */
export class QuotaExceededError extends CapsuleError {
  override name = 'QuotaExceededError';
}
/** The server refused the credentials (`unauthorized`). */
export class UnauthorizedError extends CapsuleError {
  override name = 'UnauthorizedError';
}
/**
 * The server gave up on an operation that took too long (`timeout`). A
 * command running past its own `timeoutMs` is not an error: `exec` returns
 * a result with `timedOut: true`.
 */
export class OperationTimeoutError extends CapsuleError {
  override name = 'OperationTimeoutError';
}
/** The server does not support this (`unsupported`). */
export class UnsupportedError extends CapsuleError {
  override name = 'UnsupportedError';
}
/** The server cannot serve this right now (`unavailable`). */
export class UnavailableError extends CapsuleError {
  override name = 'UnavailableError';
}

type ErrorClass = new (message: string, options?: CapsuleErrorOptions) => CapsuleError;

/** The class thrown for each error kind. */
export const ERROR_CLASSES: Readonly<Record<string, ErrorClass>> = Object.freeze({
  parse_error: ProtocolError,
  invalid_request: ProtocolError,
  method_not_found: ProtocolError,
  invalid_params: InvalidParamsError,
  internal: InternalServerError,
  sandbox_not_found: SandboxNotFoundError,
  sandbox_expired: SandboxExpiredError,
  sandbox_not_running: SandboxNotRunningError,
  template_not_found: TemplateNotFoundError,
  template_unavailable: TemplateUnavailableError,
  file_not_found: FileNotFoundInSandboxError,
  path_outside_sandbox: PathOutsideSandboxError,
  not_a_directory: NotADirectoryInSandboxError,
  is_a_directory: IsADirectoryInSandboxError,
  already_exists: AlreadyExistsError,
  permission_denied: PermissionDeniedError,
  payload_too_large: PayloadTooLargeError,
  quota_exceeded: QuotaExceededError,
  unauthorized: UnauthorizedError,
  timeout: OperationTimeoutError,
  unsupported: UnsupportedError,
  unavailable: UnavailableError,
});

const KIND_BY_CODE: Record<number, string> = {
  [-32700]: 'parse_error',
  [-32600]: 'invalid_request',
  [-32601]: 'method_not_found',
  [-32602]: 'invalid_params',
  [-32603]: 'internal',
  [-32001]: 'sandbox_not_found',
  [-32002]: 'sandbox_expired',
  [-32003]: 'sandbox_not_running',
  [-32004]: 'template_not_found',
  [-32005]: 'template_unavailable',
  [-32006]: 'file_not_found',
  [-32007]: 'path_outside_sandbox',
  [-32008]: 'not_a_directory',
  [-32009]: 'is_a_directory',
  [-32010]: 'already_exists',
  [-32011]: 'permission_denied',
  [-32012]: 'payload_too_large',
  [-32013]: 'quota_exceeded',
  [-32014]: 'unauthorized',
  [-32015]: 'timeout',
  [-32016]: 'unsupported',
  [-32017]: 'unavailable',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Builds the error for a JSON-RPC `error` object. Unknown kinds give a plain
 * {@link CapsuleError} that still carries the kind.
 */
export function errorFromPayload(error: unknown): CapsuleError {
  if (!isRecord(error)) {
    return new ProtocolError(`the server sent a malformed error: ${JSON.stringify(error)}`);
  }
  const code = typeof error.code === 'number' ? error.code : undefined;
  const data = isRecord(error.data) ? error.data : {};
  let kind = typeof data.kind === 'string' ? data.kind : undefined;
  if (kind === undefined && code !== undefined) kind = KIND_BY_CODE[code];
  const message =
    typeof error.message === 'string' && error.message !== ''
      ? error.message
      : `the server reported an error (${kind ?? code})`;
  const Cls = (kind !== undefined && Object.hasOwn(ERROR_CLASSES, kind) ? ERROR_CLASSES[kind] : undefined) ?? CapsuleError;
  return new Cls(message, { kind, code, data });
}
