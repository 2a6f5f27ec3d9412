// The dfs wire protocol, implemented from docs/PROTOCOL.md only (not from the Rust sources).
// BLAKE3 comes from @noble/hashes, CBOR from cborg: both independent of the Rust implementation.
import { blake3 } from '@noble/hashes/blake3.js'
import { encode as cborEncode, decode as cborDecode } from 'cborg'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'

export const FETCH = '/dfs/fetch/1'
export const SYNC = '/dfs/sync/1'
export const CHUNK_SIZE = 1024 * 1024 // "chunks of exactly 1 MiB (1,048,576 bytes)"
export const MAX_SIZE = 2n ** 40n
export const FETCH_REQUEST_LIMIT = 4 * 1024
export const FETCH_RESPONSE_LIMIT = CHUNK_SIZE + 64 * 1024
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
  // Write in pieces so that a large chunk response respects backpressure.
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

/** Fetch client: one chunk, checked against its hash. */
export async function fetchChunk (libp2p, peer, hash) {
  const res = await request(libp2p, peer, FETCH, { chunk: { hash } })
  if (res === 'not_found') throw new Error('chunk not_found')
  if (res.chunk == null) throw new Error(`unexpected answer ${show(res)}`)
  const data = res.chunk.data
  if (!bytesEqual(blake3(data), hash)) throw new Error('chunk does not match its hash')
  return data
}

/**
 * Fetch server for content held in memory: `files` maps cid hex → Uint8Array. Answers
 * `manifest` and `chunk`, `not_found` for anything else it does not have. Records every request
 * into `log` (for assertions).
 */
export function fetchHandler (files, log = []) {
  const byChunk = new Map()
  const byCid = new Map()
  for (const data of files) {
    const hashes = chunkHashes(data)
    byCid.set(hex(contentId(data.length, hashes)), hashes)
    hashes.forEach((h, i) => byChunk.set(hex(h), data.subarray(i * CHUNK_SIZE, Math.min((i + 1) * CHUNK_SIZE, data.length))))
  }
  const PAGE = 16384
  return async (stream) => {
    try {
      const req = decode(await readToEnd(stream, FETCH_REQUEST_LIMIT))
      log.push(req)
      let res = 'not_found'
      if (req?.manifest != null) {
        const hashes = byCid.get(hex(req.manifest.cid))
        const offset = Number(req.manifest.offset)
        if (hashes != null && offset <= hashes.length) {
          res = { manifest: { total: hashes.length, offset, chunks: hashes.slice(offset, offset + PAGE) } }
        }
      } else if (req?.chunk != null) {
        const data = byChunk.get(hex(req.chunk.hash))
        if (data != null) res = { chunk: { data } }
      }
      await sendAll(stream, encode(res))
      await stream.close()
    } catch (err) {
      stream.abort(err)
    }
  }
}

/** JSON for messages: bigints as decimal, byte strings as hex. */
export const show = (v) => JSON.stringify(v, (k, x) => typeof x === 'bigint' ? x.toString() : x instanceof Uint8Array ? hex(x) : x)
