// 8. Versions (record format 3): a js writer with a grant and a dfs node write one key without
// seeing each other's write; every node keeps both (the current version and a conflict, by the
// order: live before tombstone, then the later clock), and the next write that saw both (its
// `seen` covers the other's dot) resolves them, whether js or dfs writes it. Also the fetch/2
// `"time"` request both ways, and the 10-minute clock bound with its log line.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { DfsNode, waitFor, nextEvent } from '../lib/dfs.mjs'
import { createJsNode } from '../lib/jsnode.mjs'
import {
  recordsTopic, membersTopic, encodeRecord, decodeRecord, signRecord, versionId, fingerprint, contentIdOf, dotOf, saw, keyHash,
  syncTree, bytesEqual, fetchHandler, syncHandler, chunksHandler, request, Signer, Hlc, hex, show, FETCH, SYNC, SYNC_LIMIT, CHUNKS
} from '../lib/proto.mjs'

const AHEAD = 'refused: a record whose clock is more than 10 minutes ahead'
const cleanup = []
const files = Array.from({ length: 6 }, (_, i) => new Uint8Array(randomBytes(2000 + 100 * i))) // what js writes (and serves)
const served = [] // the fetch/2 requests the js node answered
let a, b, js, signer, network, topic, jsId
const hlc = new Hlc()

before(async () => {
  a = await DfsNode.start({ name: 'a', rustLog: 'info' })
  cleanup.push(() => a.stop())
  network = a.id.network
  topic = recordsTopic(network)
  b = await DfsNode.start({ name: 'b', bootstrap: [a.addr], rustLog: 'info' })
  cleanup.push(() => b.stop())
  const privateKey = await generateKeyPair('Ed25519')
  signer = Signer.fromLibp2p(privateKey)
  js = await createJsNode({ listen: true, privateKey })
  cleanup.push(() => js.stop())
  jsId = js.peerId.toString()
  await js.handle(FETCH, fetchHandler(files, served, { network }))
  await js.handle(CHUNKS, chunksHandler(files))
  // A sync responder (holding nothing) makes js a dfs peer to the nodes (identify lists
  // /dfs/sync/1): they measure its clock as soon as it connects, not at the next minute.
  await js.handle(SYNC, syncHandler({ network, records: new Map(), grants: [] }))
  js.services.pubsub.subscribe(topic)
  js.services.pubsub.subscribe(membersTopic(network))
  await js.dial(multiaddr(a.addr), { signal: AbortSignal.timeout(10_000) })
  await waitFor(() => js.services.pubsub.getMeshPeers(topic).includes(a.peerId), { what: 'dfs node a in the js mesh of the records topic' })
  await waitFor(async () => (await b.idNow()).network === network, { what: 'b in a\'s network' })
  await a.cli('allow', jsId)
  for (const node of [a, b]) await waitFor(async () => (await node.role(jsId)) === 'writer', { what: `${node.name}: js is a writer` })
})

after(async () => { for (const fn of cleanup.reverse()) await fn() })

/** A dfs put on `a`, and its record as js receives it on the records topic. */
async function dfsPut (key, data) {
  const message = nextEvent(js.services.pubsub, 'message', {
    filter: (evt) => { try { return evt.detail.topic === topic && decodeRecord(evt.detail.data).key === key } catch { return false } }, what: `a's record of ${key}`
  })
  await a.put(key, data)
  return decodeRecord((await message).detail.data)
}

/** Publishes a js record (signature and rules checked by js first). */
async function publish (record) {
  decodeRecord(encodeRecord(record))
  const res = await js.services.pubsub.publish(topic, encodeRecord(record))
  assert.ok(res.recipients.some(p => p.toString() === a.peerId), 'published to a')
}

/** The fields of `dfs stat --json` (or of one of its conflicts) for a record by js or by a. */
const statOf = (r) => ({
  key: r.key,
  size: Number(r.size),
  content_id: r.cid == null ? null : hex(r.cid),
  version: hex(versionId(r)),
  time: Number(r.time >> 16n),
  clock: r.time,
  author: bytesEqual(r.author, signer.author) ? jsId : a.peerId,
  deleted: r.cid == null
})
const pick = (s, fields) => Object.fromEntries(fields.map(f => [f, s[f]]))

/**
 * Waits until `node`'s stat of the key shows `current` as its current version and exactly
 * `conflicts` (version ids, best first) as its conflicts; returns the stat.
 */
async function heads (node, current, conflicts) {
  const want = [hex(versionId(current)), ...conflicts.map(r => hex(versionId(r)))]
  return waitFor(async () => {
    const s = await node.stat(current.key)
    return s.version === want[0] && s.conflicts.map(c => c.version).join() === want.slice(1).join() && (current.cid == null || s.local) ? s : null
  }, { timeout: 30_000, interval: 250, what: `${node.name}: ${current.key} current ${want[0].slice(0, 12)}, conflicts [${want.slice(1).map(v => v.slice(0, 12))}]` })
}

function checkStat (node, s, current, conflicts) {
  const fields = ['key', 'size', 'content_id', 'version', 'time', 'clock', 'author', 'deleted']
  assert.deepEqual(pick(s, fields), statOf(current), `${node.name}: the current version: ${show(s)}`)
  assert.deepEqual(s.conflicts.map(c => pick(c, fields)), conflicts.map(r => statOf(r)), `${node.name}: the conflicts: ${show(s.conflicts)}`)
  for (const c of s.conflicts) assert.deepEqual(c.conflicts, [], 'a conflict has no conflicts of its own')
}

test('fetch/2 "time": the node answers its wall clock, within a few seconds of js\'s; the nodes ask js\'s too', async (t) => {
  const before = Date.now()
  const res = await request(js, peerIdFromString(a.peerId), FETCH, 'time')
  const after = Date.now()
  assert.deepEqual(Object.keys(res), ['time'], `answer: ${show(res)}`)
  assert.deepEqual(Object.keys(res.time), ['ms'])
  const ms = Number(res.time.ms)
  t.diagnostic(`a's clock - js's: ${ms - (before + after) / 2} ms (round trip ${after - before} ms)`)
  assert.ok(ms >= before - 3_000 && ms <= after + 3_000, `a's time ${ms} within 3 s of js's [${before}, ${after}]`)
  // The node measures its dfs peers' clocks (on connection, then every minute) with the same
  // request: js answered it, and `dfs peers` shows js's offset.
  await waitFor(() => served.includes('time'), { what: 'a "time" request from a dfs node' })
  const peer = await waitFor(async () => (await a.peers()).find(p => p.peer_id === jsId && p.clock_offset_ms != null),
    { what: 'js with a measured clock offset in a\'s dfs peers' })
  t.diagnostic(`a's dfs peers: js clock_offset_ms ${peer.clock_offset_ms}`)
  assert.ok(Math.abs(peer.clock_offset_ms) < 3_000, `js's offset as a measured it: ${peer.clock_offset_ms} ms`)
})

test('concurrent writes by js and dfs (neither saw the other) are both kept, the later current; a js write that saw dfs\'s resolves them, whatever its clock', async (t) => {
  const key = 'versions/concurrent.bin'
  const rA = await dfsPut(key, new Uint8Array(randomBytes(3000)))
  assert.deepEqual(rA.seen, [], 'dfs\'s first write of the key saw nothing')
  await waitFor(async () => (await b.stat(key)).version === hex(rA.versionId), { what: 'b: dfs\'s write' })
  // js writes the key without having seen dfs's version: seq 1 of js for this key, seen empty.
  hlc.observe(rA.time) // (its clock is later: a clock is not causality)
  const rJ = signRecord(signer, { key, cid: contentIdOf(files[0]), size: files[0].length, time: hlc.now() })
  assert.ok(!saw(rJ, rA) && !saw(rA, rJ), 'concurrent')
  await publish(rJ)
  for (const node of [a, b]) {
    // The later clock is current (both are live); dfs's version is kept as a conflict.
    const s = await heads(node, rJ, [rA])
    checkStat(node, s, rJ, [rA])
    assert.equal(s.local, true)
    assert.ok(Buffer.from(await node.cliBytes('get', key)).equals(Buffer.from(files[0])), `${node.name}: dfs get returns the current (js's) bytes`)
  }
  t.diagnostic(`a: ${show(await a.stat(key))}`)

  // Anti-entropy carries both heads: the key's entry is the XOR of their fingerprints, and an
  // exchange wanting the key answers both records.
  const sync = (value) => request(js, peerIdFromString(a.peerId), SYNC, value, { limit: SYNC_LIMIT })
  const kh = keyHash(key)
  const leaf = Number(kh >> 52n)
  const entries = await sync({ entries: { leaves: [leaf] } })
  const entry = entries.entries.entries[0].map(e => e.map(BigInt)).find(([k]) => k === kh)
  assert.deepEqual(entry, [kh, fingerprint(rA) ^ fingerprint(rJ)], 'one entry per key: the XOR of its heads\' fingerprints')
  assert.deepEqual(syncTree([rA, rJ]).entries[leaf].find(([k]) => k === kh), entry, 'the js digest tree agrees')
  const ex = await sync({ exchange: { push: [], want: [kh] } })
  assert.deepEqual(ex.records.records.map(r => hex(decodeRecord(r).versionId)).sort(), [rA, rJ].map(r => hex(versionId(r))).sort(),
    'both heads in the answer')

  // js writes again, having seen dfs's version: seen [[a, its seq]]. It replaces both (its own
  // earlier version by the same-author rule), whatever the clocks: its clock is set a second
  // before both versions it replaces.
  const resolved = signRecord(signer, { key, cid: contentIdOf(files[1]), size: files[1].length, time: rA.time - (1000n << 16n), seen: [dotOf(rA)] })
  assert.ok(saw(resolved, rA) && saw(resolved, rJ))
  await publish(resolved)
  for (const node of [a, b]) {
    const s = await heads(node, resolved, [])
    checkStat(node, s, resolved, [])
    assert.ok(Buffer.from(await node.cliBytes('get', key)).equals(Buffer.from(files[1])), `${node.name}: dfs get returns the resolving write`)
  }
})

test('a concurrent js write with an earlier clock is kept as a conflict; dfs\'s next write saw it (seen [[js, seq]]) and resolves it', async (t) => {
  const key = 'versions/dfs-wins.bin'
  const rA = await dfsPut(key, new Uint8Array(randomBytes(4000)))
  // js's write carries a clock one minute before dfs's: it is concurrent, not older.
  const rJ = signRecord(signer, { key, cid: contentIdOf(files[2]), size: files[2].length, time: rA.time - (60_000n << 16n) })
  await publish(rJ)
  for (const node of [a, b]) {
    const s = await heads(node, rA, [rJ])
    checkStat(node, s, rA, [rJ])
  }
  // dfs writes the key again: it saw both heads, so its record's causal context names js's dot
  // (its own earlier version is implied by its higher seq).
  const rA2 = await dfsPut(key, new Uint8Array(randomBytes(1000)))
  t.diagnostic(`dfs's resolving write: seq ${rA2.seq}, seen ${show(rA2.seen)}`)
  assert.equal(rA2.seen.length, 1, `seen: ${show(rA2.seen)}`)
  assert.equal(hex(rA2.seen[0][0]), hex(signer.author))
  assert.equal(rA2.seen[0][1], rJ.seq)
  assert.ok(rA2.seq > rA.seq && saw(rA2, rA) && saw(rA2, rJ))
  for (const node of [a, b]) {
    const s = await heads(node, rA2, [])
    checkStat(node, s, rA2, [])
  }
})

test('a concurrent delete never hides a write: js\'s later tombstone is a conflict of dfs\'s live version', async () => {
  const key = 'versions/delete-vs-write.bin'
  const data = new Uint8Array(randomBytes(2500))
  const rA = await dfsPut(key, data)
  hlc.observe(rA.time)
  const tomb = signRecord(signer, { key, cid: null, size: 0, time: hlc.now() })
  await publish(tomb)
  for (const node of [a, b]) {
    const s = await heads(node, rA, [tomb])
    checkStat(node, s, rA, [tomb])
    assert.equal(s.deleted, false)
    assert.equal(s.conflicts[0].deleted, true)
    assert.ok(Buffer.from(await node.cliBytes('get', key)).equals(Buffer.from(data)), `${node.name}: the write is still readable`)
  }
})

test('clock bound: a js record 1 hour ahead is refused (logged), one 2 minutes ahead counts', async (t) => {
  const now = BigInt(Date.now())
  const far = signRecord(signer, { key: 'versions/far-future.bin', cid: contentIdOf(files[3]), size: files[3].length, time: (now + 3_600_000n) << 16n })
  assert.throws(() => decodeRecord(encodeRecord(far)), /10 minutes ahead/, 'js refuses it too')
  await js.services.pubsub.publish(topic, encodeRecord(far))
  const near = signRecord(signer, { key: 'versions/near-future.bin', cid: contentIdOf(files[4]), size: files[4].length, time: (now + 120_000n) << 16n })
  await publish(near)
  for (const node of [a, b]) {
    const s = await waitFor(async () => { const st = await node.stat(near.key); return st.local ? st : null },
      { timeout: 30_000, interval: 250, what: `${node.name}: the record 2 minutes ahead stored` })
    assert.equal(s.clock, near.time)
    assert.ok(!(await node.ls()).some(x => x.key === far.key), `${node.name}: the record 1 hour ahead is not stored`)
  }
  const line = await waitFor(() => a.logLines().find(l => l.includes(AHEAD)), { timeout: 10_000, what: `a log line "${AHEAD}"` })
  t.diagnostic(`a: ${line.slice(0, 300)}`)
  assert.match(line, /\bINFO\b/)
  assert.ok(line.includes(jsId), 'naming the author')
  // The node's own clock did not follow the record 2 minutes ahead: its next write is of now.
  const before = Date.now()
  const own = await dfsPut('versions/after-ahead.bin', new Uint8Array(randomBytes(100)))
  const ms = Number(own.time >> 16n)
  assert.ok(ms >= before - 1_000 && ms <= Date.now() + 2_000, `a's next write is at ${ms}, not 2 minutes ahead (now ${Date.now()})`)
})
