// The dfs wire protocol, implemented from docs/PROTOCOL.md only (not from the Rust sources).
// BLAKE3 comes from @noble/hashes, CBOR from cborg: both independent of the Rust implementation.
import { blake3 } from '@noble/hashes/blake3.js'
import { encode as cborEncode, decode as cborDecode } from 'cborg'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'

export const FETCH = '/dfs/fetch/2'
export const CHUNKS = '/dfs/chunks/1'
export const SYNC = '/dfs/sync/1'
export const CHUNK_SIZE = 1024 * 1024 // "chunks of exactly 1 MiB (1,048,576 bytes)"
export const MAX_SIZE = 2n ** 40n
export const FETCH_REQUEST_LIMIT = 4 * 1024
export const FETCH_RESPONSE_LIMIT = 640 * 1024
export const MAX_FRAME_HASHES = 64 // "count: u16 (1 to 64)"
export const MAX_ERROR_LEN = 1024 // error reply: "len: u16 (≤ 1024)"
export const REPLY_TIMEOUT_MS = 30_000 // "a requester gives up on a stream whose next reply does not start within 30 s"
export const RECORD_LIMIT = 2048

export const recordsTopic = (network) => `dfs/${network}/records/1`
export const peersTopic = (network) => `dfs/${network}/peers/1`

export const hex = (b) => Buffer.from(b).toString('hex')
export const fromHex = (s) => new Uint8Array(Buffer.from(s, 'hex'))

/** Gossipsub message id: BLAKE3(data), all 32 bytes ("Message id" in PROTOCOL.md). */
export const msgIdFn = (msg) => blake3(msg.data)

function u64be (n) {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n))
  return b
}

function concat (parts) {
  const len = parts.reduce((a, p) => a + p.length, 0)
  const out = new Uint8Array(len)
  let o = 0
  for (const p of parts) { out.set(p, o); o += p.length }
  return out
}

/** BLAKE3 of each 1 MiB chunk; an empty file has no chunks. */
export function chunkHashes (data) {
  const hashes = []
  for (let o = 0; o < data.length; o += CHUNK_SIZE) {
    hashes.push(blake3(data.subarray(o, Math.min(o + CHUNK_SIZE, data.length))))
  }
  return hashes
}

/** cid = BLAKE3("dfs/content/1" || 0x00 || size u64 BE || chunk_hash_0 || ...) */
export function contentId (size, hashes) {
  return blake3(concat([new TextEncoder().encode('dfs/content/1'), new Uint8Array([0]), u64be(size), ...hashes]))
}

export const contentIdOf = (data) => contentId(data.length, chunkHashes(data))

// CBOR maps are written in the field order of the spec's tables and vectors (cborg would
// otherwise sort keys length-first); a stable sort with a 0 comparator keeps insertion order.
const keepOrder = () => 0
export const encode = (value) => cborEncode(value, { mapSorter: keepOrder })
export const decode = (bytes) => cborDecode(bytes)

/** A record map: key, cid (Uint8Array(32) or null), size, time (bigint HLC), author (peer id bytes). */
export function encodeRecord ({ key, cid, size, time, author }) {
  return encode({ key, cid: cid ?? null, size: BigInt(size) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(size) : BigInt(size), time: BigInt(time), author })
}

function bytesEqual (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Decodes and validates a record per "Records" → "Validation"; throws on any violation. */
export function decodeRecord (bytes, { now = Date.now() } = {}) {
  const r = typeof bytes.length === 'number' && bytes instanceof Uint8Array ? decode(bytes) : bytes
  const fields = Object.keys(r).sort().join(',')
  if (fields !== 'author,cid,key,size,time') throw new Error(`record fields: ${fields}`)
  const { key, cid, size, time, author } = r
  const keyBytes = new TextEncoder().encode(key)
  if (typeof key !== 'string' || keyBytes.length < 1 || keyBytes.length > 1024 || key.includes('\0')) throw new Error('bad key')
  if (cid !== null && !(cid instanceof Uint8Array && cid.length === 32)) throw new Error('bad cid')
  const sizeN = BigInt(size)
  if (sizeN < 0n || sizeN > MAX_SIZE) throw new Error('bad size')
  if (cid === null && sizeN !== 0n) throw new Error('tombstone with a size')
  const timeN = BigInt(time)
  if (timeN < 0n || timeN >= 2n ** 64n) throw new Error('bad time')
  if ((timeN >> 16n) > BigInt(now) + 5n * 60n * 1000n) throw new Error('time too far ahead')
  if (!(author instanceof Uint8Array) || author.length > 64) throw new Error('bad author')
  const authorId = peerIdFromMultihash(Digest.decode(author))
  return { key, cid, size: sizeN, time: timeN, author, authorId }
}

/** Hybrid logical clock: ms since the epoch in the upper 48 bits, a counter in the lower 16. */
export class Hlc {
  last = 0n
  observe (time) { if (BigInt(time) > this.last) this.last = BigInt(time) }
  now () {
    const wall = BigInt(Date.now()) << 16n
    this.last = wall > this.last ? wall : this.last + 1n
    return this.last
  }
}

// ---- request-response framing: one CBOR value each way, ended by EOF (no length prefix) ----

async function readToEnd (stream, limit) {
  const parts = []
  let len = 0
  for await (const chunk of stream) {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    len += bytes.length
    if (len > limit) throw new Error(`message over the limit of ${limit} bytes`)
    parts.push(bytes)
  }
  return concat(parts)
}

async function sendAll (stream, bytes) {
  // Write in pieces so that a large chunk reply respects backpressure.
  const PIECE = 64 * 1024
  for (let o = 0; o < bytes.length; o += PIECE) {
    if (!stream.send(bytes.subarray(o, Math.min(o + PIECE, bytes.length)))) await stream.onDrain()
  }
}

/** Opens a stream, writes the request, closes the write side, reads the response to EOF. */
export async function request (libp2p, peer, protocol, value, { limit = FETCH_RESPONSE_LIMIT, timeoutMs = 30_000 } = {}) {
  const signal = AbortSignal.timeout(timeoutMs)
  const stream = await libp2p.dialProtocol(peer, protocol, { signal })
  try {
    const reading = readToEnd(stream, limit)
    reading.catch(() => {})
    await sendAll(stream, encode(value))
    await stream.close({ signal })
    const abort = new Promise((resolve, reject) => signal.addEventListener('abort', () => reject(new Error(`${protocol} request timed out`)), { once: true }))
    const bytes = await Promise.race([reading, abort])
    if (bytes.length === 0) {
      const err = new Error(`${protocol}: the responder closed the stream without a response`)
      err.name = 'EmptyResponseError'
      throw err
    }
    return decode(bytes)
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

/** Fetch client: the chunk list of `cid` (all pages), checked against the content id. */
export async function fetchManifest (libp2p, peer, cid, size) {
  const total = Math.ceil(Number(size) / CHUNK_SIZE)
  const chunks = []
  while (true) {
    const res = await request(libp2p, peer, FETCH, { manifest: { cid, offset: chunks.length } })
    if (res === 'not_found') throw new Error('manifest not_found')
    if (res.manifest == null) throw new Error(`unexpected answer ${show(res)}`)
    const m = res.manifest
    if (Number(m.total) !== total) throw new Error(`manifest total ${m.total}, expected ${total} for size ${size}`)
    if (Number(m.offset) !== chunks.length) throw new Error(`manifest offset ${m.offset}, expected ${chunks.length}`)
    if (total > 0 && m.chunks.length === 0) throw new Error('empty manifest page')
    chunks.push(...m.chunks)
    if (chunks.length >= total) break
  }
  if (chunks.length !== total) throw new Error(`manifest has ${chunks.length} chunks, expected ${total}`)
  if (!bytesEqual(contentId(size, chunks), cid)) throw new Error('chunk list does not match the content id')
  return chunks
}

/**
 * Fetch server for content held in memory: `files` is a list of Uint8Array. Answers `manifest`
 * (pages of at most 16,384 hashes) and `record` with `not_found`; any other request (such as
 * version 1's `chunk`) does not decode as a fetch/2 request: the stream is reset, as the spec
 * says. Records every decoded request into `log` (for assertions).
 */
export function fetchHandler (files, log = []) {
  const byCid = contentIndex(files).byCid
  const PAGE = 16384
  return async (stream) => {
    try {
      const req = decode(await readToEnd(stream, FETCH_REQUEST_LIMIT))
      log.push(req)
      let res
      if (req === 'not_found' || typeof req !== 'object' || req == null) throw new Error(`not a fetch/2 request: ${show(req)}`)
      if (req.manifest != null) {
        res = 'not_found'
        const hashes = byCid.get(hex(req.manifest.cid))
        const offset = Number(req.manifest.offset)
        if (hashes != null && offset <= hashes.length) {
          res = { manifest: { total: hashes.length, offset, chunks: hashes.slice(offset, offset + PAGE) } }
        }
      } else if (req.record != null) {
        res = 'not_found'
      } else {
        throw new Error(`not a fetch/2 request: ${show(req)}`)
      }
      await sendAll(stream, encode(res))
      await stream.close()
    } catch (err) {
      stat.outcome = `failed: ${err.message}`
      stream.abort(err)
    }
  }
}

function contentIndex (files) {
  const byChunk = new Map()
  const byCid = new Map()
  for (const data of files) {
    const hashes = chunkHashes(data)
    byCid.set(hex(contentId(data.length, hashes)), hashes)
    hashes.forEach((h, i) => byChunk.set(hex(h), data.subarray(i * CHUNK_SIZE, Math.min((i + 1) * CHUNK_SIZE, data.length))))
  }
  return { byChunk, byCid }
}

// ---- /dfs/chunks/1: a raw stream with binary framing (all integers big-endian) ----

/** Request frame: count u16 (1..64), then count × 32-byte hashes. */
export function encodeChunkRequest (hashes) {
  if (hashes.length < 1 || hashes.length > MAX_FRAME_HASHES) throw new Error(`a frame carries 1 to ${MAX_FRAME_HASHES} hashes, not ${hashes.length}`)
  const out = new Uint8Array(2 + 32 * hashes.length)
  new DataView(out.buffer).setUint16(0, hashes.length)
  hashes.forEach((h, i) => {
    if (h.length !== 32) throw new Error('a chunk hash is 32 bytes')
    out.set(h, 2 + 32 * i)
  })
  return out
}

/** Reply `0x00` + len u32 + bytes. */
export function encodeChunkReply (data) {
  const out = new Uint8Array(5 + data.length)
  out[0] = 0x00
  new DataView(out.buffer).setUint32(1, data.length)
  out.set(data, 5)
  return out
}

/** Reply `0x01`: not found. */
export const encodeNotFoundReply = () => new Uint8Array([0x01])

/** Reply `0x02` + len u16 + UTF-8 message (at most 1024 bytes). */
export function encodeErrorReply (message) {
  let bytes = new TextEncoder().encode(message)
  if (bytes.length > MAX_ERROR_LEN) bytes = bytes.subarray(0, MAX_ERROR_LEN) // (callers keep messages short and ASCII)
  const out = new Uint8Array(3 + bytes.length)
  out[0] = 0x02
  new DataView(out.buffer).setUint16(1, bytes.length)
  out.set(bytes, 3)
  return out
}

/** Buffered reads of exact byte counts from a libp2p stream (its async iterator). */
export class ByteReader {
  constructor (stream) {
    this.it = stream[Symbol.asyncIterator]()
    this.bufs = []
    this.len = 0
    this.ended = false
  }

  /** Buffers at least `n` bytes; false if the stream ended first. Throws if it was reset. */
  async fill (n) {
    while (this.len < n && !this.ended) {
      const r = await this.it.next()
      if (r.done) { this.ended = true; break }
      const b = r.value instanceof Uint8Array ? r.value : r.value.subarray()
      if (b.length > 0) { this.bufs.push(b); this.len += b.length }
    }
    return this.len >= n
  }

  take (n) {
    const out = new Uint8Array(n)
    let o = 0
    while (o < n) {
      const b = this.bufs[0]
      const k = Math.min(b.length, n - o)
      out.set(b.subarray(0, k), o)
      o += k
      if (k === b.length) this.bufs.shift()
      else this.bufs[0] = b.subarray(k)
    }
    this.len -= n
    return out
  }

  /** Exactly `n` bytes; null on a clean end before the first byte; throws on a truncated read. */
  async read (n) {
    if (await this.fill(n)) return this.take(n)
    if (this.len === 0) return null
    throw new Error(`stream ended inside a message (${this.len} of ${n} bytes)`)
  }

  /** True when the remote closed its write side and every byte was read. */
  async atEnd () { return !(await this.fill(1)) }
}

function withTimeout (promise, ms, what, onTimeout) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => { onTimeout?.(); reject(new Error(`${what}: nothing within ${ms} ms`)) }, ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Reads one reply from a /dfs/chunks/1 stream: `{ type: 'chunk', data }`, `{ type: 'not_found' }`,
 * `{ type: 'error', message }`, or null if the stream ended cleanly before a reply started.
 */
export async function readChunkReply (reader) {
  const tag = await reader.read(1)
  if (tag == null) return null
  switch (tag[0]) {
    case 0x00: {
      const len = new DataView((await reader.read(4)).buffer).getUint32(0)
      if (len < 1 || len > CHUNK_SIZE) throw new Error(`chunk reply of ${len} bytes (1 to ${CHUNK_SIZE})`)
      const data = await reader.read(len)
      if (data == null) throw new Error('stream ended inside a chunk reply')
      return { type: 'chunk', data }
    }
    case 0x01: return { type: 'not_found' }
    case 0x02: {
      const len = new DataView((await reader.read(2)).buffer).getUint16(0)
      if (len > MAX_ERROR_LEN) throw new Error(`error reply of ${len} bytes (at most ${MAX_ERROR_LEN})`)
      const bytes = len === 0 ? new Uint8Array(0) : await reader.read(len)
      if (bytes == null) throw new Error('stream ended inside an error reply')
      return { type: 'error', message: new TextDecoder('utf-8', { fatal: true }).decode(bytes) }
    }
    default: throw new Error(`unknown reply tag 0x${tag[0].toString(16).padStart(2, '0')}`)
  }
}

/**
 * The requester side of one /dfs/chunks/1 stream. `request(hashes)` writes a frame (it does not
 * wait for earlier answers: frames pipeline); `reply()` reads the next reply in request order,
 * within 30 s; `finish()` closes the write side; `end()` waits for the responder to close.
 */
export class ChunkStream {
  static async open (libp2p, peer, { signal = AbortSignal.timeout(10_000), timeoutMs = REPLY_TIMEOUT_MS } = {}) {
    const stream = await libp2p.dialProtocol(peer, CHUNKS, { signal })
    return new ChunkStream(stream, timeoutMs)
  }

  constructor (stream, timeoutMs = REPLY_TIMEOUT_MS) {
    this.stream = stream
    this.reader = new ByteReader(stream)
    this.timeoutMs = timeoutMs
    this.pending = [] // hashes asked and not answered yet, in order
    this.frames = 0
  }

  /** Writes raw bytes (for malformed frames in tests). */
  async sendRaw (bytes) {
    if (!this.stream.send(bytes)) await this.stream.onDrain()
  }

  async request (hashes) {
    const frame = encodeChunkRequest(hashes)
    this.pending.push(...hashes)
    this.frames++
    await this.sendRaw(frame)
  }

  /** The next reply, with the hash it answers (null hash for replies to raw bytes). */
  async reply () {
    const r = await withTimeout(readChunkReply(this.reader), this.timeoutMs, `${CHUNKS} reply`,
      () => this.stream.abort(new Error('reply timeout')))
    if (r != null) r.hash = this.pending.shift() ?? null
    return r
  }

  async finish () { await this.stream.close() }

  /** Resolves true when the responder closed the stream with nothing more to read. */
  async end () {
    return withTimeout(this.reader.atEnd(), this.timeoutMs, `${CHUNKS} end of stream`,
      () => this.stream.abort(new Error('end timeout')))
  }

  abort (err) { this.stream.abort(err) }
}

/**
 * Fetches `hashes` on one /dfs/chunks/1 stream: `perFrame` hashes per request frame, up to
 * `inFlight` frames written ahead of the replies. Checks every chunk's BLAKE3 against the hash it
 * answers, and its length against `lengths[i]` when given. Throws on `not_found` or `error`.
 * Returns the chunks in order and the stream's statistics.
 */
export async function fetchChunks (libp2p, peer, hashes, { perFrame = 4, inFlight = 4, lengths } = {}) {
  const cs = await ChunkStream.open(libp2p, peer)
  const frames = []
  for (let i = 0; i < hashes.length; i += perFrame) frames.push(hashes.slice(i, i + perFrame))
  let maxAhead = 0
  try {
    let sent = 0
    let answeredFrames = 0
    const chunks = []
    while (sent < Math.min(inFlight, frames.length)) await cs.request(frames[sent++])
    if (sent === frames.length) await cs.finish()
    for (let i = 0; i < hashes.length; i++) {
      maxAhead = Math.max(maxAhead, sent - answeredFrames)
      const r = await cs.reply()
      if (r == null) throw new Error(`${CHUNKS} stream ended after ${i} of ${hashes.length} replies`)
      if (r.type !== 'chunk') throw new Error(`chunk ${hex(hashes[i])}: ${show(r)}`)
      if (!bytesEqual(blake3(r.data), hashes[i])) throw new Error(`chunk ${i} does not match its hash`)
      if (lengths != null && r.data.length !== lengths[i]) throw new Error(`chunk ${i} is ${r.data.length} bytes, expected ${lengths[i]}`)
      chunks.push(r.data)
      // A frame fully answered: write the next one, keeping `inFlight` frames ahead.
      if ((i + 1) % perFrame === 0 || i + 1 === hashes.length) {
        answeredFrames++
        if (sent < frames.length) {
          await cs.request(frames[sent++])
          if (sent === frames.length) await cs.finish()
        }
      }
    }
    if (!(await cs.end())) throw new Error(`${CHUNKS}: more bytes after the last reply`)
    return { chunks, frames: frames.length, maxAhead, stream: cs.stream }
  } catch (err) {
    cs.abort(err)
    throw err
  }
}

/** The expected length of each chunk of a file of `size` bytes (1 MiB but the last). */
export function chunkLengths (size) {
  const n = Math.ceil(Number(size) / CHUNK_SIZE)
  return Array.from({ length: n }, (_, i) => i + 1 < n ? CHUNK_SIZE : Number(size) - CHUNK_SIZE * (n - 1))
}

/**
 * /dfs/chunks/1 server for content held in memory (`files`: Uint8Array list). Reads a frame,
 * answers each hash in order (chunk or not found), then reads the next frame; a malformed frame
 * gets an error reply and the stream is closed. When the requester has closed its side and every
 * frame is answered, closes the stream. Records every requested hash (hex) into `log`, and
 * `{ frames, hashes, outcome }` of each stream into `streams`.
 */
export function chunksHandler (files, log = [], { idleMs = 30_000, streams = [] } = {}) {
  const byChunk = contentIndex(files).byChunk
  return async (stream) => {
    const reader = new ByteReader(stream)
    const send = (bytes) => sendAll(stream, bytes)
    const stat = { frames: 0, hashes: 0, outcome: 'open' }
    streams.push(stat)
    try {
      while (true) {
        const head = await withTimeout(reader.read(2), idleMs, `${CHUNKS} idle`)
        if (head == null) { stat.outcome = 'requester closed'; break } // everything answered
        const count = new DataView(head.buffer).getUint16(0)
        if (count < 1 || count > MAX_FRAME_HASHES) {
          await send(encodeErrorReply(`malformed frame: count ${count}, expected 1 to ${MAX_FRAME_HASHES}`))
          stat.outcome = 'malformed frame'
          break
        }
        stat.frames++
        stat.hashes += count
        const body = await reader.read(32 * count)
        if (body == null) throw new Error('stream ended inside a frame')
        for (let i = 0; i < count; i++) {
          const h = hex(body.subarray(32 * i, 32 * i + 32))
          log.push(h)
          const data = byChunk.get(h)
          await send(data != null ? encodeChunkReply(data) : encodeNotFoundReply())
        }
      }
      await stream.close()
    } catch (err) {
      stat.outcome = `failed: ${err.message}`
      stream.abort(err)
    }
  }
}

/** JSON for messages: bigints as decimal, byte strings as hex. */
export const show = (v) => JSON.stringify(v, (k, x) => typeof x === 'bigint' ? x.toString() : x instanceof Uint8Array ? hex(x) : x)
