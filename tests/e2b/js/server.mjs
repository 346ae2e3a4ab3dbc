// Starts and stops a real `capsule serve` for one test file, and points the
// unmodified E2B SDKs at it through their own environment variables
// (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY).

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const REPO = path.resolve(HERE, '..', '..', '..')

const HEALTH_TIMEOUT_MS = 60_000
const STOP_GRACE_MS = 15_000
const KILL_WAIT_MS = 5_000

/** The capsule binary: $CAPSULE_BIN, else <repo>/target/debug/capsule. */
export function capsuleBin() {
  const bin = process.env.CAPSULE_BIN || path.join(REPO, 'target', 'debug', 'capsule')
  try {
    fs.accessSync(bin, fs.constants.X_OK)
  } catch {
    throw new Error(
      `capsule binary not found or not executable at ${bin}: build it with ` +
        '`cargo build -p capsule` in the repository root, or set CAPSULE_BIN to its path',
    )
  }
  return bin
}

/** A port on 127.0.0.1 that was free a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Resolves `true` when `promise` settles within `ms`, else `false`; leaves no timer behind. */
async function settlesWithin(promise, ms) {
  let timer
  const timeout = new Promise((r) => {
    timer = setTimeout(() => r(false), ms)
  })
  try {
    return await Promise.race([promise.then(() => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Servers this process started and has not stopped yet. */
const live = new Set()
// Exiting without stopping them (a crash): SIGKILL, the only thing possible synchronously.
process.on('exit', () => {
  for (const s of live) s.killNow()
})
// Interrupted: stop them properly (their sandboxes too), then exit as the signal would.
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.once(signal, async () => {
    const stopping = [...live].map(async (s) => {
      const problems = await s.stop()
      for (const p of problems) process.stderr.write(`capsule server (pid ${s.pid}) on ${signal}: ${p}\n`)
    })
    await settlesWithin(Promise.allSettled(stopping), 25_000)
    process.exit(code)
  })
}

class CapsuleServer {
  constructor() {
    this.bin = capsuleBin()
    this.apiKey = `e2b_${randomBytes(20).toString('hex')}`
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-e2b-js-'))
    // Sandbox processes run as other uids and must be able to traverse it.
    fs.chmodSync(this.dir, 0o755)
    this.logPath = path.join(this.dir, 'server.log')
    this.child = null
    this.pid = null
    this.exited = null // {code, signal} once the process is gone
    this.stopping = false
    this.port = null
    this.url = null
  }

  /** The last `lines` lines of the server's log. */
  logTail(lines = 60) {
    let text
    try {
      text = fs.readFileSync(this.logPath, 'utf8')
    } catch (e) {
      return `(no server log at ${this.logPath}: ${e.message})`
    }
    return text.replace(/\x1b\[[0-9;]*m/g, '').split('\n').slice(-lines - 1).join('\n')
  }

  printLogTail(why, lines = 60) {
    process.stderr.write(
      `\n----- capsule server log (${why}; pid ${this.pid}, ${this.logPath}), last ${lines} lines -----\n` +
        `${this.logTail(lines)}\n----- end of capsule server log -----\n`,
    )
  }

  async start() {
    let lastError
    // The port is picked before the server binds it; another process may take it in between.
    for (let attempt = 0; attempt < 3; attempt++) {
      this.port = await freePort()
      try {
        await this.#spawnAndWait()
        return this
      } catch (e) {
        lastError = e
        const busy = /cannot listen on/.test(this.logTail(20))
        await this.#killAndWait()
        if (!busy) break
      }
    }
    this.printLogTail('the server did not start')
    this.#removeDir()
    throw lastError
  }

  async #spawnAndWait() {
    this.url = `http://127.0.0.1:${this.port}`
    const log = fs.openSync(this.logPath, 'a')
    const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--state-dir', this.dir, '--api-keys', this.apiKey]
    fs.writeSync(log, `# ${this.bin} ${args.join(' ')}\n`)
    const env = { ...process.env }
    // Settings for the client commands or the server from the environment must not leak in.
    for (const k of Object.keys(env)) if (k.startsWith('CAPSULE_') && k !== 'CAPSULE_LOG') delete env[k]
    env.NO_COLOR = '1'
    this.exited = null
    this.stopping = false
    const child = spawn(this.bin, args, { stdio: ['ignore', log, log], env })
    fs.closeSync(log)
    this.child = child
    this.pid = child.pid
    live.add(this)
    const exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = { code, signal }
        live.delete(this)
        if (!this.stopping) {
          process.stderr.write(`\ncapsule server (pid ${this.pid}) died unexpectedly: code ${code}, signal ${signal}\n`)
          this.printLogTail('the server died')
        }
        resolve(this.exited)
      })
    })
    this.exitedPromise = exited
    child.once('error', (e) => {
      process.stderr.write(`\ncannot run ${this.bin}: ${e.message}\n`)
    })

    const deadline = Date.now() + HEALTH_TIMEOUT_MS
    let last = 'no answer yet'
    while (Date.now() < deadline) {
      if (this.exited) {
        this.stopping = true
        throw new Error(
          `capsule serve exited before it was healthy (code ${this.exited.code}, signal ${this.exited.signal})`,
        )
      }
      try {
        const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) })
        await res.arrayBuffer()
        if (res.status === 200) {
          process.env.E2B_API_URL = this.url
          process.env.E2B_SANDBOX_URL = this.url
          process.env.E2B_API_KEY = this.apiKey
          delete process.env.E2B_DOMAIN
          delete process.env.E2B_DEBUG
          delete process.env.E2B_ACCESS_TOKEN
          return
        }
        last = `HTTP ${res.status}`
      } catch (e) {
        last = e.message
      }
      await sleep(100)
    }
    throw new Error(`capsule serve at ${this.url} did not answer GET /health with 200 within ${HEALTH_TIMEOUT_MS} ms (last: ${last})`)
  }

  /** Sandboxes the server still runs (control-plane list, with this server's key). */
  async runningSandboxIds() {
    const res = await fetch(`${this.url}/v2/sandboxes?limit=1000`, {
      headers: { 'X-API-Key': this.apiKey },
      signal: AbortSignal.timeout(10_000),
    })
    if (!res.ok) throw new Error(`GET /v2/sandboxes: HTTP ${res.status}: ${await res.text()}`)
    return (await res.json()).map((s) => s.sandboxID)
  }

  /**
   * Kills sandboxes left running (the server keeps sandboxes running across
   * its own restarts, so they would outlive it). Returns their ids.
   */
  async killLeftovers() {
    const ids = await this.runningSandboxIds()
    for (const id of ids) {
      const res = await fetch(`${this.url}/sandboxes/${id}`, {
        method: 'DELETE',
        headers: { 'X-API-Key': this.apiKey },
        signal: AbortSignal.timeout(30_000),
      })
      await res.arrayBuffer()
    }
    return ids
  }

  /** SIGKILL to exactly the started PID, synchronously (for process exit). */
  killNow() {
    if (this.child && !this.exited) {
      this.stopping = true
      try {
        process.kill(this.pid, 'SIGKILL')
      } catch {}
    }
  }

  async #killAndWait() {
    if (!this.child || this.exited) return
    this.stopping = true
    try {
      process.kill(this.pid, 'SIGKILL')
    } catch {}
    await settlesWithin(this.exitedPromise, KILL_WAIT_MS)
  }

  /**
   * Stops the server: kills sandboxes it still runs, SIGTERM to its PID,
   * up to 15 s of grace, then SIGKILL; removes the temp dir. Returns what
   * was wrong (leftover sandboxes, a forced kill), for the caller to report.
   */
  async stop() {
    const problems = []
    if (this.child && !this.exited) {
      try {
        const left = await this.killLeftovers()
        if (left.length) problems.push(`sandboxes still running at the end, killed by the harness: ${left.join(', ')}`)
      } catch (e) {
        problems.push(`could not list or kill leftover sandboxes: ${e.message}`)
      }
      this.stopping = true
      try {
        process.kill(this.pid, 'SIGTERM')
      } catch {}
      const graceful = await settlesWithin(this.exitedPromise, STOP_GRACE_MS)
      if (!graceful) {
        problems.push(`capsule serve (pid ${this.pid}) ignored SIGTERM for ${STOP_GRACE_MS} ms; sent SIGKILL`)
        this.printLogTail('the server did not stop on SIGTERM')
        await this.#killAndWait()
      }
    } else if (this.exited && !this.stopping) {
      problems.push(`capsule serve (pid ${this.pid}) had died: code ${this.exited.code}, signal ${this.exited.signal}`)
    }
    live.delete(this)
    const leaked = this.#leftoverCgroups()
    if (leaked.length) process.stderr.write(`warning: capsule serve (pid ${this.pid}) left cgroups behind: ${leaked.join(' ')}\n`)
    this.#removeDir()
    return problems
  }

  /** Cgroup directories named after this server's instance that outlived it. */
  #leftoverCgroups() {
    let instance
    try {
      instance = fs.readFileSync(path.join(this.dir, 'native', 'instance-id'), 'utf8').trim()
    } catch {
      return []
    }
    if (!/^[0-9a-f]{12}$/.test(instance)) return []
    const found = []
    let controllers = []
    try {
      controllers = fs.readdirSync('/sys/fs/cgroup')
    } catch {
      return []
    }
    for (const c of ['', ...controllers]) {
      const p = path.join('/sys/fs/cgroup', c, `capsule-${instance}`)
      if (fs.existsSync(p)) found.push(p)
    }
    return found
  }

  #removeDir() {
    try {
      fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 })
    } catch (e) {
      process.stderr.write(`warning: could not remove ${this.dir}: ${e.message}\n`)
    }
  }
}

/** Starts a fresh server and configures the E2B SDKs (through the environment) to use it. */
export async function startServer() {
  return new CapsuleServer().start()
}

/**
 * Stops a server from startServer (if it started) and throws when stopping
 * it had to clean up: sandboxes left running, a server that had died or
 * ignored SIGTERM.
 */
export async function stopServer(server) {
  if (!server) return
  const problems = await server.stop()
  if (problems.length) throw new Error(`capsule server: ${problems.join('; ')}`)
}

/** For afterEach: prints the server's log tail after a test that failed or timed out. */
export function logOnFailure(server, t) {
  if (server && t.passed === false) server.printLogTail(`test "${t.name}" failed`)
}
