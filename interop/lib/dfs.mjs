// Runs dfs nodes (the binary from $DFS_BIN) and its CLI, with bounded waits and cleanup.
import { spawn, execFile } from 'node:child_process'
import { mkdtemp, rm, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
export const DFS_BIN = resolve(process.env.DFS_BIN ?? join(here, '..', '..', 'target', 'debug', 'dfs'))

/** Polls `fn` until it returns a truthy value (returned) or the deadline passes (throws). */
export async function waitFor (fn, { timeout = 20_000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastErr
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) { lastErr = err }
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`)
}

/** Resolves with the first event of `type` on `target` that passes `filter`, or rejects at the deadline. */
export function nextEvent (target, type, { filter = () => true, timeout = 20_000, what = type } = {}) {
  return new Promise((resolve, reject) => {
    const onEvent = (evt) => {
      if (!filter(evt)) return
      clearTimeout(timer)
      target.removeEventListener(type, onEvent)
      resolve(evt)
    }
    const timer = setTimeout(() => {
      target.removeEventListener(type, onEvent)
      reject(new Error(`timed out after ${timeout} ms waiting for ${what}`))
    }, timeout)
    target.addEventListener(type, onEvent)
  })
}

function childEnv ({ rustLog } = {}) {
  const env = { ...process.env, NO_COLOR: '1' }
  // Default log level unless the test or the runner asks otherwise (test 4 checks the default level's output).
  delete env.RUST_LOG
  if (process.env.DFS_INTEROP_RUST_LOG) env.RUST_LOG = process.env.DFS_INTEROP_RUST_LOG
  if (rustLog != null) env.RUST_LOG = rustLog
  for (const k of ['DFS_API', 'DFS_API_TOKEN', 'DFS_DATA_DIR', 'DFS_LISTEN', 'DFS_BOOTSTRAP', 'DFS_JOIN', 'DFS_NETWORK']) delete env[k]
  return env
}

/** Runs a dfs CLI command; resolves with stdout, rejects (with stderr) on a non-zero exit. */
export function dfsCli (args, { timeout = 30_000, encoding = 'utf8' } = {}) {
  return new Promise((resolve, reject) => {
    execFile(DFS_BIN, args, { env: childEnv(), timeout, encoding, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        err.message = `dfs ${args.join(' ')}: ${err.message}\n${stderr}`
        reject(err)
      } else resolve(stdout)
    })
  })
}

let running = new Set()
process.on('exit', () => { for (const child of running) child.kill('SIGKILL') })

/**
 * A dfs node in a fresh temporary data dir. Without `bootstrap` it creates a network and owns it
 * (network id = its peer id); with `bootstrap` alone it joins the bootstrap peer's network as a
 * reader. `rustLog` sets its RUST_LOG (default: the node's default level); `args` are more
 * flags of `dfs node` (e.g. `['--join', ticket]` or `['--replicas', '2']`).
 */
export class DfsNode {
  static async start ({ bootstrap = [], name = 'dfs', rustLog, args: extra = [] } = {}) {
    const dir = await mkdtemp(join(tmpdir(), `dfs-interop-${name}-`))
    const args = ['node', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0']
    for (const b of bootstrap) args.push('--bootstrap', b)
    args.push(...extra)
    const child = spawn(DFS_BIN, args, { env: childEnv({ rustLog }), stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    const node = new DfsNode(name, dir, child)
    try {
      await waitFor(async () => {
        if (node.exited) throw new Error(`node exited (${child.exitCode ?? child.signalCode}):\n${node.stderr}`)
        return (await readFile(join(dir, 'api'), 'utf8').catch(() => '')).trim() !== ''
      }, { timeout: 30_000, what: `${name}: the api file` })
      node.id = JSON.parse(await node.cli('id', '--json'))
    } catch (err) {
      await node.stop()
      throw err
    }
    return node
  }

  constructor (name, dir, child) {
    this.name = name
    this.dir = dir
    this.child = child
    this.stderr = ''
    this.stdout = ''
    this.exited = false
    child.stderr.setEncoding('utf8').on('data', (s) => { this.stderr += s })
    child.stdout.setEncoding('utf8').on('data', (s) => { this.stdout += s })
    this.exitPromise = new Promise(resolve => child.on('exit', () => { this.exited = true; running.delete(child); resolve() }))
  }

  get peerId () { return this.id.peer_id }
  get addr () { return this.id.addrs[0] }
  /** `dfs id --json` now (network and role can change after start: a reader learns its network). */
  async idNow () { return JSON.parse(await this.cli('id', '--json')) }
  /** `dfs members --json`: [{ peer_id, role, owner, cutoff? }] */
  async members () { return JSON.parse(await this.cli('members', '--json')) }
  async role (peerId) { return (await this.members()).find(m => m.peer_id === peerId)?.role ?? null }
  /** `dfs ls --all --json` (tombstones included). */
  async ls () { return JSON.parse(await this.cli('ls', '--all', '--json')) }

  cli (...args) { return dfsCli([...args, '--data-dir', this.dir]) }
  cliBytes (...args) { return dfsCli([...args, '--data-dir', this.dir], { encoding: 'buffer' }) }
  /**
   * `dfs stat KEY --json`, with `clock` (a u64 HLC, beyond 2^53, a decimal string in the JSON)
   * as a BigInt, in the stat and in each of its `conflicts` (the versions concurrent with the
   * current one).
   */
  async stat (key) {
    const stat = JSON.parse(await this.cli('stat', key, '--json'))
    for (const s of [stat, ...(stat.conflicts ?? [])]) if (s.clock != null) s.clock = BigInt(s.clock)
    return stat
  }
  async peers () { return JSON.parse(await this.cli('peers', '--json')) }

  async put (key, data) {
    const file = join(this.dir, `upload-${Date.now()}-${Math.random().toString(16).slice(2)}`)
    await writeFile(file, data)
    try {
      await this.cli('put', file, '--key', key)
      return await this.stat(key)
    } finally { await rm(file, { force: true }) }
  }

  /** Log lines (ANSI colours stripped). */
  logLines () {
    // eslint-disable-next-line no-control-regex
    return (this.stderr + this.stdout).replace(/\x1b\[[0-9;]*m/g, '').split('\n')
  }

  /** Log lines at WARN or ERROR level. */
  warnings () { return this.logLines().filter(l => /\b(WARN|ERROR)\b/.test(l)) }

  async stop () {
    if (!this.exited) {
      this.child.kill('SIGTERM')
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000)
      await this.exitPromise
      clearTimeout(timer)
    }
    await rm(this.dir, { recursive: true, force: true })
  }
}

export async function dfsVersion () {
  // `dfs --version` prints "dfs <crate version>"
  return (await dfsCli(['--version'])).trim().split(/\s+/)[1]
}
