// The dfs wire protocol, implemented from docs/PROTOCOL.md only (not from the Rust sources).
// BLAKE3 comes from @noble/hashes, CBOR from cborg: both independent of the Rust implementation.
import { blake3 } from '@noble/hashes/blake3.js'
import { ed25519 } from '@noble/curves/ed25519.js'
import { encode as cborEncode, decode as cborDecode } from 'cborg'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import { base58btc } from 'multiformats/bases/base58'

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
export const RECORD_LIMIT = 8192 // a record message: a key of ≤ 1 KiB and ≤ 64 `seen` entries fit

export const SYNC_LIMIT = 2 * 1024 * 1024
export const GRANT_LIMIT = 1024
export const MAX_SEEN = 64 // entries of a record's causal context
export const MAX_AUTHOR_LEN = 64
/** Records whose clock is further ahead of the network's time than this are refused (they count later). */
export const MAX_AHEAD_MS = 10 * 60 * 1000

export const recordsTopic = (network) => `dfs/${network}/records/3`
export const membersTopic = (network) => `dfs/${network}/members/1`
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

/** A u64 as CBOR wants it: a Number when exact (shortest encoding either way), else a BigInt. */
export const u64 = (n) => BigInt(n) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : BigInt(n)

function bytesEqual (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
export { bytesEqual }

const RECORD_DOMAIN = new TextEncoder().encode('dfs/record/3\0')
const GRANT_DOMAIN = new TextEncoder().encode('dfs/grant/1\0')

// ---- ed25519 peer ids: identity multihash (0x00, len) of the protobuf public key (08 01 12 20 + key) ----

const PROTOBUF_ED25519 = [0x08, 0x01, 0x12, 0x20]

/** The author bytes (peer id multihash) of an ed25519 public key. */
export function authorOf (publicKey) {
  if (publicKey.length !== 32) throw new Error('an ed25519 public key is 32 bytes')
  return new Uint8Array([0x00, 0x24, ...PROTOBUF_ED25519, ...publicKey])
}

/** The ed25519 public key in `author` bytes; throws unless it is an ed25519 peer id. */
export function publicKeyOf (author) {
  if (!(author instanceof Uint8Array) || author.length !== 38 || author[0] !== 0x00 || author[1] !== 0x24 ||
    !PROTOBUF_ED25519.every((b, i) => author[2 + i] === b)) throw new Error(`not an ed25519 peer id: ${hex(author ?? [])}`)
  return author.subarray(6)
}

/** An ed25519 signer: `seed` is the 32-byte secret; `seq` numbers every object it signs (1, 2, ...). */
export class Signer {
  constructor (seed) {
    this.seed = seed
    this.publicKey = ed25519.getPublicKey(seed)
    this.author = authorOf(this.publicKey)
    this.peerId = peerIdFromMultihash(Digest.decode(this.author))
    this.seq = 0
  }

  /** From a libp2p Ed25519 private key (its `raw` is seed || public key). */
  static fromLibp2p (privateKey) {
    if (privateKey.type !== 'Ed25519') throw new Error('an Ed25519 key')
    const signer = new Signer(privateKey.raw.subarray(0, 32))
    if (!bytesEqual(signer.publicKey, privateKey.publicKey.raw)) throw new Error('the libp2p key does not derive its own public key')
    return signer
  }

  nextSeq () { return ++this.seq }
  sign (bytes) { return ed25519.sign(bytes, this.seed) }
}

// ---- records (format 3) ----

/** Byte-wise order of two byte strings (a shorter prefix first), as the `seen` entries are sorted. */
export const compareBytes = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))

/** A causal context as CBOR wants it: `[[author bytes, seq], ...]`, the order kept as given. */
const seenBody = (seen) => seen.map(([author, seq]) => [author, u64(seq)])

/** The first seven fields in table order, as plain CBOR values (the signed part of a record). */
function recordBody ({ key, cid, size, time, author, seq, seen = [] }) {
  return { key, cid: cid ?? null, size: u64(size), time: u64(time), author, seq: u64(seq), seen: seenBody(seen) }
}

/** Signed bytes = "dfs/record/3" 0x00 || canonical CBOR of the seven fields. */
export const recordSignedBytes = (r) => concat([RECORD_DOMAIN, encode(recordBody(r))])
/** Version id = BLAKE3(signed bytes). */
export const versionId = (r) => blake3(recordSignedBytes(r))
/** Fingerprint = the first 8 bytes of the version id, big-endian. */
export const fingerprint = (r) => new DataView(versionId(r).buffer).getBigUint64(0)
/** Key hash = the first 8 bytes of BLAKE3(key), big-endian. */
export const keyHash = (key) => new DataView(blake3(new TextEncoder().encode(key)).buffer).getBigUint64(0)

/** The record as a CBOR-ready map in table order (with `sig`). */
export const recordMap = (r) => ({ ...recordBody(r), sig: r.sig })

/** Encodes a record (eight fields, in table order). */
export const encodeRecord = (r) => encode(recordMap(r))

/** A record's dot: `[author, seq]` (what a later writer puts in `seen` once it saw the record). */
export const dotOf = (r) => [r.author, BigInt(r.seq)]

/** The highest seq of `author` in `r`'s causal context (its own dot included); 0 if none. */
export function seenOf (r, author) {
  if (bytesEqual(r.author, author)) return BigInt(r.seq)
  const e = r.seen.find(([a]) => bytesEqual(a, author))
  return e == null ? 0n : BigInt(e[1])
}

/** True if `r` saw `v` (a version of the same key): then `r` replaces it, whatever the clocks. */
export function saw (r, v) {
  if (bytesEqual(r.author, v.author)) return BigInt(r.seq) > BigInt(v.seq)
  return seenOf(r, v.author) >= BigInt(v.seq)
}

/**
 * Makes a signed record: `signer` signs it and gives it the next `seq` unless `seq` is given.
 * `seen` is its causal context, `[[author bytes, seq], ...]`, signed in the order given (the
 * spec wants it sorted by author; tests send unsorted ones on purpose).
 * Returns the record object ({ key, cid, size, time, author, seq, seen, sig }).
 */
export function signRecord (signer, { key, cid, size, time, author = signer.author, seq = signer.nextSeq(), seen = [] }) {
  const r = { key, cid: cid ?? null, size: BigInt(size), time: BigInt(time), author, seq: BigInt(seq), seen: seen.map(([a, s]) => [a, BigInt(s)]) }
  r.sig = signer.sign(recordSignedBytes(r))
  return r
}

/** True if `sig` is `author`'s ed25519 signature of the record's signed bytes (re-encoded). */
export function verifyRecord (r) {
  try {
    return ed25519.verify(r.sig, recordSignedBytes(r), publicKeyOf(r.author))
  } catch { return false }
}

/** Checks a causal context: ≤ 64 entries, sorted strictly by author, not `author` itself, seq ≥ 1; throws why not. */
function checkSeen (seen, author) {
  if (!Array.isArray(seen)) throw new Error('bad seen: not an array')
  if (seen.length > MAX_SEEN) throw new Error(`bad seen: more than ${MAX_SEEN} entries`)
  for (let i = 0; i < seen.length; i++) {
    const e = seen[i]
    if (!Array.isArray(e) || e.length !== 2) throw new Error('bad seen: an entry is not [author, seq]')
    const [a, s] = e
    if (!(a instanceof Uint8Array) || a.length > MAX_AUTHOR_LEN) throw new Error('bad seen: an author is not bytes of at most 64')
    if (bytesEqual(a, author)) throw new Error('bad seen: an entry names the record\'s own author')
    if ((typeof s !== 'number' && typeof s !== 'bigint') || BigInt(s) < 1n || BigInt(s) >= 2n ** 64n) throw new Error('bad seen: a zero seq (or not a u64)')
    if (i > 0 && compareBytes(seen[i - 1][0], a) >= 0) throw new Error('bad seen: not sorted strictly by author')
  }
}

/**
 * Decodes and validates a record per format 3 (everything but authority): fields, key rules,
 * size, tombstone, author, causal context (`seen`), and the signature; and the clock bound
 * (a node judges it against the network's time, js against `now`, its wall clock unless given;
 * `now: null` skips it): a time more than 10 minutes ahead throws (up to 10 minutes counts).
 * Accepts a CBOR byte string or a decoded map; throws on any violation.
 */
export function decodeRecord (bytes, { now = Date.now(), verify = true } = {}) {
  const r = bytes instanceof Uint8Array ? decode(bytes) : bytes
  if (r == null || typeof r !== 'object') throw new Error('a record is a map')
  for (const f of ['key', 'cid', 'size', 'time', 'author', 'seq', 'seen', 'sig']) {
    if (!(f in r)) throw new Error(`record field ${f} missing: ${Object.keys(r)}`)
  }
  const { key, cid, size, time, author, seq, seen, sig } = r
  if (typeof key !== 'string') throw new Error('bad key')
  const keyBytes = new TextEncoder().encode(key)
  if (keyBytes.length < 1 || keyBytes.length > 1024) throw new Error('bad key: length')
  // The spec's grammar: no control or bidi-formatting character; no empty, `.` or `..` segment.
  if (/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u.test(key)) throw new Error('bad key: a control character')
  if (key.split('/').some(s => s === '' || s === '.' || s === '..')) throw new Error('bad key: an empty, . or .. segment')
  if (cid !== null && !(cid instanceof Uint8Array && cid.length === 32)) throw new Error('bad cid')
  const sizeN = BigInt(size)
  if (sizeN < 0n || sizeN > MAX_SIZE) throw new Error('bad size')
  if (cid === null && sizeN !== 0n) throw new Error('tombstone with a size')
  const timeN = BigInt(time)
  if (timeN < 0n || timeN >= 2n ** 64n) throw new Error('bad time')
  if (now != null && (timeN >> 16n) > BigInt(now) + BigInt(MAX_AHEAD_MS)) throw new Error('time more than 10 minutes ahead')
  if (!(author instanceof Uint8Array) || author.length > MAX_AUTHOR_LEN) throw new Error('bad author')
  publicKeyOf(author)
  const seqN = BigInt(seq)
  if (seqN < 0n || seqN >= 2n ** 64n) throw new Error('bad seq')
  checkSeen(seen, author)
  if (!(sig instanceof Uint8Array) || sig.length !== 64) throw new Error('bad sig')
  const rec = { key, cid, size: sizeN, time: timeN, author, seq: seqN, seen: seen.map(([a, s]) => [a, BigInt(s)]), sig }
  if (verify && !verifyRecord(rec)) throw new Error('the signature does not verify')
  rec.authorId = peerIdFromMultihash(Digest.decode(author))
  rec.versionId = versionId(rec)
  return rec
}

// ---- grants (members topic) ----

const ROLES = ['admin', 'writer', 'reader']

function grantBody ({ network, subject, role, cutoff = 0, time, issuer, seq }) {
  return { network, subject, role, cutoff: u64(cutoff), time: u64(time), issuer, seq: u64(seq) }
}

/** Signed bytes = "dfs/grant/1" 0x00 || canonical CBOR of every field but `sig`. */
export const grantSignedBytes = (g) => concat([GRANT_DOMAIN, encode(grantBody(g))])
/** Grant id = BLAKE3(signed bytes). */
export const grantId = (g) => blake3(grantSignedBytes(g))
export const grantMap = (g) => ({ ...grantBody(g), sig: g.sig })
export const encodeGrant = (g) => encode(grantMap(g))

export function signGrant (signer, { network, subject, role, cutoff = 0, time, issuer = signer.author, seq = signer.nextSeq() }) {
  const g = { network, subject, role, cutoff: BigInt(cutoff), time: BigInt(time), issuer, seq: BigInt(seq) }
  g.sig = signer.sign(grantSignedBytes(g))
  return g
}

export function verifyGrant (g) {
  try {
    return ed25519.verify(g.sig, grantSignedBytes(g), publicKeyOf(g.issuer))
  } catch { return false }
}

/** Decodes and verifies a grant (fields, role, ed25519 ids, signature); throws on any violation. */
export function decodeGrant (bytes, { verify = true } = {}) {
  const g = bytes instanceof Uint8Array ? decode(bytes) : bytes
  for (const f of ['network', 'subject', 'role', 'cutoff', 'time', 'issuer', 'seq', 'sig']) {
    if (g == null || !(f in g)) throw new Error(`grant field ${f} missing`)
  }
  if (typeof g.network !== 'string') throw new Error('bad network')
  if (!ROLES.includes(g.role)) throw new Error(`bad role ${g.role}`)
  publicKeyOf(g.subject)
  publicKeyOf(g.issuer)
  if (!(g.sig instanceof Uint8Array) || g.sig.length !== 64) throw new Error('bad sig')
  const grant = { network: g.network, subject: g.subject, role: g.role, cutoff: BigInt(g.cutoff), time: BigInt(g.time), issuer: g.issuer, seq: BigInt(g.seq), sig: g.sig }
  if (verify && !verifyGrant(grant)) throw new Error('the grant signature does not verify')
  grant.id = grantId(grant)
  grant.subjectId = peerIdFromMultihash(Digest.decode(grant.subject))
  grant.issuerId = peerIdFromMultihash(Digest.decode(grant.issuer))
  return grant
}

/** Grants digest = BLAKE3 of the ids of every grant, sorted bytewise and concatenated. */
export function grantsDigest (grants) {
  const ids = grants.map(g => g.id ?? grantId(g)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  return blake3(concat(ids))
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
 * (pages of at most 16,384 hashes), `record` from `state.records` (a Map key → record, or
 * `not_found`), `"network"` with `state.network` (or `not_found`), `has` (whether the
 * content is among `files`) and `"time"` with the js wall clock (`state.clock()` if given, else
 * `Date.now()`); any other request (such as
 * version 1's `chunk`) does not decode as a fetch/2 request: the stream is reset, as the spec
 * says. Records every decoded request into `log` (for assertions).
 */
export function fetchHandler (files, log = [], state = {}) {
  const byCid = contentIndex(files).byCid
  const PAGE = 16384
  return async (stream) => {
    try {
      const req = decode(await readToEnd(stream, FETCH_REQUEST_LIMIT))
      log.push(req)
      let res
      if (req === 'network') {
        res = state.network != null ? { network: { id: state.network } } : 'not_found'
      } else if (req === 'time') {
        res = { time: { ms: u64((state.clock ?? Date.now)()) } }
      } else if (typeof req !== 'object' || req == null) {
        throw new Error(`not a fetch/2 request: ${show(req)}`)
      } else if (req.manifest != null) {
        res = 'not_found'
        const hashes = byCid.get(hex(req.manifest.cid))
        const offset = Number(req.manifest.offset)
        if (hashes != null && offset <= hashes.length) {
          res = { manifest: { total: hashes.length, offset, chunks: hashes.slice(offset, offset + PAGE) } }
        }
      } else if (req.has != null) {
        res = { has: { complete: byCid.has(hex(req.has.cid)) } }
      } else if (req.record != null) {
        const r = state.records?.get(req.record.key)
        res = r != null ? { record: { record: recordMap(r) } } : 'not_found'
      } else {
        throw new Error(`not a fetch/2 request: ${show(req)}`)
      }
      await sendAll(stream, encode(res))
      await stream.close()
    } catch (err) {
      stream.abort(err)
    }
  }
}

// ---- /dfs/sync/1: the digest tree of a record set ----

const LEAVES = 4096
const BRANCHES = 64

/**
 * The digest tree of `records` (record objects; a key may have several heads: its current
 * version and its conflicts): leaf and branch hashes, root, count (of records), entries (one per
 * key: its key hash and the XOR of its heads' fingerprints), and the heads by key hash.
 */
export function syncTree (records) {
  const leaves = new Array(LEAVES).fill(0n)
  const entries = Array.from({ length: LEAVES }, () => [])
  const byKeyHash = new Map()
  const byKey = new Map()
  for (const r of records) {
    const kh = keyHash(r.key)
    const leaf = Number(kh >> 52n)
    leaves[leaf] ^= fingerprint(r)
    if (!byKey.has(r.key)) byKey.set(r.key, [])
    byKey.get(r.key).push(r)
    if (!byKeyHash.has(kh)) byKeyHash.set(kh, [])
    byKeyHash.get(kh).push(r)
  }
  for (const [key, heads] of byKey) {
    const kh = keyHash(key)
    entries[Number(kh >> 52n)].push([kh, heads.reduce((a, r) => a ^ fingerprint(r), 0n)])
  }
  for (const e of entries) e.sort((x, y) => x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0)
  const branches = Array.from({ length: BRANCHES }, (_, b) => leaves.slice(64 * b, 64 * b + 64).reduce((a, x) => a ^ x, 0n))
  const root = leaves.reduce((a, x) => a ^ x, 0n)
  return { leaves, branches, root, count: records.length, entries, byKeyHash }
}

/**
 * A /dfs/sync/1 responder over `state.records` (Map key → record object, or an array of a key's
 * heads) and `state.grants`
 * (grant objects): it answers every request of the table as the spec says, with whatever is in
 * `state` (the tests put forged records and grants there). Every decoded request goes to `log`.
 */
export function syncHandler (state, log = []) {
  return async (stream) => {
    try {
      const req = decode(await readToEnd(stream, SYNC_LIMIT))
      log.push(req)
      const tree = syncTree([...(state.records?.values() ?? [])].flat())
      const grants = state.grants ?? []
      let res
      if (req === 'root') {
        res = { root: { root: u64(tree.root), count: tree.count, ...(state.network != null ? { grants: grantsDigest(grants) } : {}) } }
      } else if (req === 'branches') {
        res = { branches: { hashes: tree.branches.map(u64) } }
      } else if (req?.leaves != null) {
        res = { leaves: { hashes: req.leaves.branches.map(b => tree.leaves.slice(64 * b, 64 * b + 64).map(u64)) } }
      } else if (req?.entries != null) {
        res = { entries: { entries: req.entries.leaves.map(l => tree.entries[l].map(([k, f]) => [u64(k), u64(f)])) } }
      } else if (req?.exchange != null) {
        state.pushed?.push(...req.exchange.push)
        // Each wanted key answers with all its heads.
        res = { records: { records: req.exchange.want.flatMap(k => tree.byKeyHash.get(BigInt(k)) ?? []).map(recordMap) } }
      } else if (req?.grants != null) {
        const same = bytesEqual(grantsDigest(grants), req.grants.digest)
        res = { grants: { grants: same ? [] : grants.map(grantMap) } }
      } else {
        throw new Error(`not a sync request: ${show(req)}`)
      }
      await sendAll(stream, encode(res))
      await stream.close()
    } catch (err) {
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

// ---- placement and repair (PROTOCOL.md "Placement and repair") ----

const SETTINGS_DOMAIN = new TextEncoder().encode('dfs/settings/1\0')
export const SETTINGS_LIMIT = 512
export const MAX_REPLICAS = 64
/** A node's capacity when it announced none: 1 TiB. */
export const DEFAULT_CAPACITY = 2n ** 40n

function settingsBody ({ network, replicas, time, issuer }) {
  return { network, replicas: u64(replicas), time: u64(time), issuer }
}

/** Signed bytes = "dfs/settings/1" 0x00 || canonical CBOR map of network, replicas, time, issuer. */
export const settingsSignedBytes = (s) => concat([SETTINGS_DOMAIN, encode(settingsBody(s))])
/** The settings map (five fields, in table order). */
export const encodeSettings = (s) => encode({ ...settingsBody(s), sig: s.sig })

export function signSettings (signer, { network, replicas, time, issuer = signer.author }) {
  const s = { network, replicas: BigInt(replicas), time: BigInt(time), issuer }
  s.sig = signer.sign(settingsSignedBytes(s))
  return s
}

export function verifySettings (s) {
  try {
    return ed25519.verify(s.sig, settingsSignedBytes(s), publicKeyOf(s.issuer))
  } catch { return false }
}

/**
 * Decodes settings (≤ 512 bytes): fields and types, replicas 0 to 64, and unless `verify` is false
 * the signature and that the issuer is the network's owner (its peer id is the network id).
 * `replicas` 0 means every node (`all`). Throws on any violation.
 */
export function decodeSettings (bytes, { verify = true } = {}) {
  if (bytes.length > SETTINGS_LIMIT) throw new Error(`settings over ${SETTINGS_LIMIT} bytes`)
  const m = decode(bytes)
  for (const f of ['network', 'replicas', 'time', 'issuer', 'sig']) {
    if (m == null || !(f in m)) throw new Error(`settings field ${f} missing`)
  }
  if (typeof m.network !== 'string') throw new Error('bad network')
  const replicas = BigInt(m.replicas)
  if (replicas < 0n || replicas > BigInt(MAX_REPLICAS)) throw new Error(`bad replicas ${replicas}`)
  publicKeyOf(m.issuer)
  if (!(m.sig instanceof Uint8Array) || m.sig.length !== 64) throw new Error('bad sig')
  const s = { network: m.network, replicas, time: BigInt(m.time), issuer: m.issuer, sig: m.sig }
  s.issuerId = peerIdFromMultihash(Digest.decode(s.issuer))
  if (verify) {
    if (!verifySettings(s)) throw new Error('the settings signature does not verify')
    if (s.issuerId.toString() !== s.network) throw new Error(`settings issued by ${s.issuerId}, not the network's owner ${s.network}`)
  }
  return s
}

const M64 = (1n << 64n) - 1n
/** MurmurHash3's 64-bit finaliser, multiplications modulo 2^64. */
export function fmix64 (x) {
  x &= M64
  x ^= x >> 33n
  x = (x * 0xff51afd7ed558ccdn) & M64
  x ^= x >> 33n
  x = (x * 0xc4ceb9fe1a85ec53n) & M64
  x ^= x >> 33n
  return x
}

const le64 = (bytes) => new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true)

/**
 * The placement draw of the peer `peer` (its peer id bytes) with capacity `capacity` (bytes; a
 * BigInt or Number) for the content id `cid`: { h, u, w, score }.
 * s_c = first 8 bytes of cid, s_p = first 8 bytes of BLAKE3(peer id bytes), both little-endian;
 * h = fmix64(s_c ^ s_p); u = ((h >> 11) + 0.5) / 2^53; w = capacity / 2^30 (≥ 1/1024);
 * score = w / -ln(u), all in binary64.
 */
export function placementScore (cid, peer, capacity = DEFAULT_CAPACITY) {
  const sc = le64(cid)
  const sp = le64(blake3(peer))
  const h = fmix64(sc ^ sp)
  const u = (Number(h >> 11n) + 0.5) / 2 ** 53
  const w = Math.max(Number(BigInt(capacity)) / 2 ** 30, 1 / 1024)
  return { h, u, w, score: w / -Math.log(u) }
}

/**
 * The order of `candidates` ([{ peer: peer id bytes, capacity? }]) for `cid`, best first: higher
 * score, then larger h, then smaller peer id bytes. `place` keeps the first `replicas` (all when
 * there are no more; replicas 0 means every node).
 */
export function placementOrder (cid, candidates) {
  return candidates
    .map(c => ({ ...c, ...placementScore(cid, c.peer, c.capacity ?? DEFAULT_CAPACITY) }))
    .sort((a, b) => (b.score - a.score) || (a.h === b.h ? 0 : (a.h > b.h ? -1 : 1)) || compareBytes(a.peer, b.peer))
}

export function place (cid, candidates, replicas) {
  const order = placementOrder(cid, candidates)
  return Number(replicas) === 0 ? order : order.slice(0, Number(replicas))
}

// ---- tickets (PROTOCOL.md "Trust", "Joining"): "dfs1" + base58btc of a CBOR map ----

/** Decodes a ticket into its map: { network, addrs, key, grant, settings? } (bytes as given). */
export function decodeTicket (ticket) {
  if (!ticket.startsWith('dfs1')) throw new Error('a ticket starts with dfs1')
  return decode(base58btc.baseDecode(ticket.slice(4)))
}
