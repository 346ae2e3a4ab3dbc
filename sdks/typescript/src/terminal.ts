import { CapsuleConnectionError, CapsuleError, CapsuleTimeoutError, TerminalClosedError } from './errors.js';
import { checkSize, describeFailure, handshakeError } from './internal.js';

export interface TerminalOpenEvent {
  type: 'open';
}
/** Terminal output. */
export interface TerminalMessageEvent {
  type: 'message';
  data: string;
}
export interface TerminalCloseEvent {
  type: 'close';
  /** 1000 when the shell exited or the client closed. */
  code: number;
  /** E.g. `"exit status 0"` when the shell exited. */
  reason: string;
  wasClean: boolean;
}
export interface TerminalErrorEvent {
  type: 'error';
  error: CapsuleError;
  message: string;
}

export interface TerminalEventMap {
  open: TerminalOpenEvent;
  message: TerminalMessageEvent;
  close: TerminalCloseEvent;
  error: TerminalErrorEvent;
}

type Listener<K extends keyof TerminalEventMap> = (event: TerminalEventMap[K]) => void;

/** What the terminal needs from a WebSocket implementation. */
interface Transport {
  send(data: string | Uint8Array): void;
  close(code: number, reason: string): void;
  abort(): void;
}

interface TransportEvents {
  open(): void;
  text(data: string): void;
  close(code: number, reason: string): void;
  error(error: CapsuleError): void;
}

/** Keep at most this much unread output for `expect` (the newest part). */
const MAX_BUFFER = 1 << 20;

function isNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof proc?.versions?.node === 'string';
}

/** Node: the `ws` package (it can send headers and report HTTP errors). */
async function openWithWs(url: string, headers: Record<string, string>, baseUrl: string, on: TransportEvents): Promise<Transport> {
  const mod = (await import('ws')) as unknown as { default?: unknown; WebSocket?: unknown };
  const WS = (mod.default ?? mod.WebSocket) as typeof import('ws').WebSocket;
  const ws = new WS(url, { headers, perMessageDeflate: false });
  let settled = false;
  ws.on('unexpected-response', (_req, res) => {
    const chunks: Uint8Array[] = [];
    res.on('data', (chunk: Uint8Array) => chunks.push(chunk));
    res.on('end', () => {
      if (settled) return;
      settled = true;
      const body = new TextDecoder().decode(Buffer.concat(chunks));
      const error = handshakeError(res.statusCode ?? 0, body, url);
      on.error(error);
      on.close(1006, error.message);
      // Aborts the request and destroys its socket (req.destroy() alone
      // leaves the socket open once the response is complete).
      ws.terminate();
    });
  });
  ws.on('open', () => on.open());
  ws.on('message', (data, isBinary) => {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    on.text(isBinary ? new TextDecoder().decode(bytes) : bytes.toString('utf8'));
  });
  ws.on('error', (err) => {
    if (settled) return;
    settled = true;
    const error = new CapsuleConnectionError(`cannot reach the Capsule server at ${baseUrl}: ${describeFailure(err)}`, { cause: err });
    on.error(error);
    on.close(1006, error.message);
  });
  ws.on('close', (code, reason) => {
    if (settled) return;
    settled = true;
    on.close(code, reason.toString('utf8'));
  });
  return {
    send: (data) => ws.send(data, { binary: typeof data !== 'string' }),
    close: (code, reason) => ws.close(code, reason),
    abort: () => {
      settled = true;
      ws.terminate();
    },
  };
}

/** Browsers (and runtimes with a global WebSocket): no custom headers, and
 * no details about refused upgrades. */
function openWithGlobal(url: string, baseUrl: string, on: TransportEvents): Transport {
  const WS = (globalThis as unknown as { WebSocket: typeof WebSocket }).WebSocket;
  const ws = new WS(url);
  ws.binaryType = 'arraybuffer';
  let settled = false;
  ws.onopen = () => on.open();
  ws.onmessage = (e: MessageEvent) => {
    on.text(typeof e.data === 'string' ? e.data : new TextDecoder().decode(e.data as ArrayBuffer));
  };
  ws.onerror = () => {
    if (settled || ws.readyState === WS.OPEN) return;
    settled = true;
    const error = new CapsuleConnectionError(`the terminal connection to ${baseUrl} failed (${url})`);
    on.error(error);
    on.close(1006, error.message);
  };
  ws.onclose = (e: CloseEvent) => {
    if (settled) return;
    settled = true;
    on.close(e.code, e.reason);
  };
  return {
    send: (data) => ws.send(data),
    close: (code, reason) => ws.close(code, reason),
    abort: () => {
      settled = true;
      ws.close();
    },
  };
}

/**
 * A shell in a sandbox, over a WebSocket. Get one from
 * {@link Capsule.connectTerminal}.
 *
 * It behaves like a browser `WebSocket`: set `onmessage` to receive output
 * (`event.data` is a string), call `send()` to type. Unlike a WebSocket,
 * `send()` and `resize()` may be called before the connection is open; they
 * are queued and sent, in order, once it is.
 *
 * ```ts
 * const term = capsule.connectTerminal({ cols: 120, rows: 40 });
 * term.onmessage = (e) => process.stdout.write(e.data);
 * term.send('ls -la\n');
 * await term.expect('$ ');
 * term.resize(100, 30);
 * term.close();
 * ```
 */
export class Terminal {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  /** The WebSocket URL. */
  readonly url: string;
  /** 0 connecting, 1 open, 2 closing, 3 closed (as `WebSocket.readyState`). */
  readyState: 0 | 1 | 2 | 3 = Terminal.CONNECTING;
  onopen: ((event: TerminalOpenEvent) => void) | null = null;
  onmessage: ((event: TerminalMessageEvent) => void) | null = null;
  onclose: ((event: TerminalCloseEvent) => void) | null = null;
  onerror: ((event: TerminalErrorEvent) => void) | null = null;
  /** Resolves once the connection is open; rejects if it cannot be opened. */
  readonly opened: Promise<void>;
  /** Resolves with the close event once the terminal is closed, for any reason. */
  readonly closed: Promise<TerminalCloseEvent>;
  /** The close code, once closed. */
  closeCode: number | undefined;
  /** The close reason, once closed (e.g. `"exit status 0"`). */
  closeReason: string | undefined;

  private transport: Transport | undefined;
  private readonly queue: (string | Uint8Array)[] = [];
  private buffer = '';
  private readonly waiters = new Set<() => void>();
  private readonly listeners: { [K in keyof TerminalEventMap]: Set<Listener<K>> } = {
    open: new Set(),
    message: new Set(),
    close: new Set(),
    error: new Set(),
  };
  private resolveOpened!: () => void;
  private rejectOpened!: (error: CapsuleError) => void;
  private resolveClosed!: (event: TerminalCloseEvent) => void;
  private closeRequested = false;
  private readonly onFinish: ((terminal: Terminal) => void) | undefined;

  /** @internal Use {@link Capsule.connectTerminal}. */
  constructor(url: string, baseUrl: string, headers: Record<string, string>, onFinish?: (terminal: Terminal) => void) {
    this.url = url;
    this.onFinish = onFinish;
    this.opened = new Promise<void>((resolve, reject) => {
      this.resolveOpened = resolve;
      this.rejectOpened = reject;
    });
    // Nobody has to await `opened`: a failure is also reported as an error event.
    this.opened.catch(() => undefined);
    this.closed = new Promise<TerminalCloseEvent>((resolve) => {
      this.resolveClosed = resolve;
    });
    const events: TransportEvents = {
      open: () => this.handleOpen(),
      text: (data) => this.handleText(data),
      close: (code, reason) => this.finish(code, reason, code === 1000),
      error: (error) => this.handleError(error),
    };
    const start = async (): Promise<Transport> => {
      const hasGlobal = typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'function';
      if (isNode() || !hasGlobal) {
        try {
          return await openWithWs(url, headers, baseUrl, events);
        } catch (e) {
          if (!hasGlobal) throw e;
        }
      }
      return openWithGlobal(url, baseUrl, events);
    };
    start().then(
      (transport) => {
        this.transport = transport;
        if (this.closeRequested) transport.abort();
      },
      (e: unknown) => {
        this.handleError(
          new CapsuleConnectionError(`cannot open a WebSocket (install the "ws" package on Node.js < 22): ${describeFailure(e)}`, { cause: e }),
        );
        this.finish(1006, '', false);
      },
    );
  }

  /**
   * Types `data` into the terminal (remember the newline: `send('ls\n')`).
   * Queued while connecting. Throws {@link TerminalClosedError} once closed.
   */
  send(data: string | Uint8Array): void {
    this.enqueue(typeof data === 'string' ? data : new TextDecoder().decode(data));
  }

  /** Changes the terminal size; programs in it see `SIGWINCH`. Queued while connecting. */
  resize(cols: number, rows: number): void {
    checkSize('cols', cols);
    checkSize('rows', rows);
    this.enqueue(new TextEncoder().encode(JSON.stringify({ type: 'resize', cols, rows })));
  }

  /** Closes the connection, which ends the shell. Safe to call twice. */
  close(code = 1000, reason = ''): void {
    if (this.readyState === Terminal.CLOSING || this.readyState === Terminal.CLOSED) return;
    const wasOpen = this.readyState === Terminal.OPEN;
    this.readyState = Terminal.CLOSING;
    this.closeRequested = true;
    if (this.transport) {
      if (wasOpen) this.transport.close(code, reason);
      else this.transport.abort();
    }
    this.finish(code, reason || 'closed by the client', true);
  }

  /**
   * Waits until the output contains `pattern` (a substring or a RegExp) and
   * resolves with the output up to the end of the match. Output after the
   * match stays buffered for the next `expect`. Rejects with
   * {@link CapsuleTimeoutError} after `timeoutMs` (default 10 s) and with
   * {@link TerminalClosedError} if the terminal closes first.
   */
  async expect(pattern: string | RegExp, options: { timeoutMs?: number } = {}): Promise<string> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.matchEnd(pattern);
      if (end !== undefined) {
        const out = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end);
        return out;
      }
      if (this.readyState === Terminal.CLOSED) {
        throw new TerminalClosedError(
          `the terminal closed before ${String(pattern)} appeared (${this.closeReason || `close code ${this.closeCode}`}); last output: ${JSON.stringify(this.buffer.slice(-200))}`,
          this.closeCode,
          this.closeReason ?? '',
        );
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new CapsuleTimeoutError(
          `terminal output did not show ${String(pattern)} within ${timeoutMs} ms; last output: ${JSON.stringify(this.buffer.slice(-200))}`,
        );
      }
      await this.nextEvent(remaining);
    }
  }

  addEventListener<K extends keyof TerminalEventMap>(type: K, listener: Listener<K>): void {
    this.listeners[type].add(listener);
  }

  removeEventListener<K extends keyof TerminalEventMap>(type: K, listener: Listener<K>): void {
    this.listeners[type].delete(listener);
  }

  // -- internals --------------------------------------------------------------

  private enqueue(data: string | Uint8Array): void {
    if (this.readyState === Terminal.CONNECTING) {
      this.queue.push(data);
    } else if (this.readyState === Terminal.OPEN && this.transport) {
      this.transport.send(data);
    } else {
      throw new TerminalClosedError(
        `the terminal is closed (${this.closeReason || `close code ${this.closeCode}`})`,
        this.closeCode,
        this.closeReason ?? '',
      );
    }
  }

  private matchEnd(pattern: string | RegExp): number | undefined {
    if (typeof pattern === 'string') {
      const at = this.buffer.indexOf(pattern);
      return at === -1 ? undefined : at + pattern.length;
    }
    const re = new RegExp(pattern.source, pattern.flags.replace('g', '').replace('y', ''));
    const m = re.exec(this.buffer);
    return m ? m.index + m[0].length : undefined;
  }

  private nextEvent(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      this.waiters.add(wake);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private handleOpen(): void {
    if (this.readyState !== Terminal.CONNECTING) return;
    this.readyState = Terminal.OPEN;
    const transport = this.transport;
    for (const item of this.queue.splice(0)) transport?.send(item);
    this.resolveOpened();
    this.dispatch('open', { type: 'open' });
  }

  private handleText(data: string): void {
    if (this.readyState === Terminal.CLOSED) return;
    this.buffer += data;
    if (this.buffer.length > MAX_BUFFER) this.buffer = this.buffer.slice(-MAX_BUFFER);
    this.wake();
    this.dispatch('message', { type: 'message', data });
  }

  private handleError(error: CapsuleError): void {
    if (this.readyState === Terminal.CLOSED) return;
    this.rejectOpened(error);
    this.dispatch('error', { type: 'error', error, message: error.message });
  }

  private finish(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState === Terminal.CLOSED) return;
    this.readyState = Terminal.CLOSED;
    this.closeCode = code;
    this.closeReason = reason;
    this.queue.length = 0;
    this.rejectOpened(new TerminalClosedError(`the terminal closed before it opened (${reason || `close code ${code}`})`, code, reason));
    const event: TerminalCloseEvent = { type: 'close', code, reason, wasClean };
    this.resolveClosed(event);
    this.wake();
    this.onFinish?.(this);
    this.dispatch('close', event);
  }

  private dispatch<K extends keyof TerminalEventMap>(type: K, event: TerminalEventMap[K]): void {
    const handler = this[`on${type}`] as Listener<K> | null;
    for (const listener of [handler, ...this.listeners[type]]) {
      if (!listener) continue;
      try {
        listener.call(this, event);
      } catch (e) {
        // Like EventTarget: a throwing listener does not stop the others.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
