// 4. A js writer with a grant (issue 11): the owner runs `dfs allow <js peer id>`; js then signs
// its records as format 3 with its own libp2p ed25519 key (seq 1, 2, ...) and publishes them on
// dfs/<network>/records/3 for content it holds and serves (chunk list over /dfs/fetch/2, chunks
// over /dfs/chunks/1); two dfs nodes (the second bootstrapped only to the first, a reader) store
// them, and `dfs stat` names js as the author.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { DfsNode, waitFor, nextEvent } from '../lib/dfs.mjs'
import { createJsNode } from '../lib/jsnode.mjs'
import {
  recordsTopic, membersTopic, encode, encodeRecord, decodeRecord, decodeGrant, signRecord, verifyRecord, recordMap, versionId, contentIdOf, chunkHashes,
  fetchHandler, chunksHandler, request, grantsDigest, Signer, Hlc, hex, show, compareBytes, FETCH, SYNC, SYNC_LIMIT, CHUNKS, CHUNK_SIZE, RECORD_LIMIT
} from '../lib/proto.mjs'

const key = 'from-js/payload.bin'
const first = new Uint8Array(randomBytes(1000)) // seq 1: one small chunk
const data = new Uint8Array(randomBytes(Math.floor(1.5 * CHUNK_SIZE) + 3)) // seq 2: 2 chunks, replacing seq 1
const cleanup = []
let a, b, js, signer, network, topic, members
const state = { records: new Map() } // what the js fetch/2 responder answers to `record` and `network`
const served = [] // the fetch/2 requests the js node answered
const servedChunks = [] // the chunk hashes (hex) asked of the js node on /dfs/chunks/1
const chunkStreams = [] // { frames, hashes, outcome } of each /dfs/chunks/1 stream
let grant // the owner's grant of writer to js, as js received it

before(async () => {
  a = await DfsNode.start({ name: 'a' })
  cleanup.push(() => a.stop())
  network = a.id.network
  topic = recordsTopic(network)
  members = membersTopic(network)
  state.network = network
  b = await DfsNode.start({ name: 'b', bootstrap: [a.addr] })
  cleanup.push(() => b.stop())
  const privateKey = await generateKeyPair('Ed25519')
  signer = Signer.fromLibp2p(privateKey)
  js = await createJsNode({ listen: true, privateKey })
  cleanup.push(() => js.stop())
  assert.equal(signer.peerId.toString(), js.peerId.toString())
  await js.handle(FETCH, fetchHandler([first, data], served, state))
  await js.handle(CHUNKS, chunksHandler([first, data], servedChunks, { streams: chunkStreams }))
  js.services.pubsub.subscribe(topic)
  js.services.pubsub.subscribe(members)
  await js.dial(multiaddr(a.addr), { signal: AbortSignal.timeout(10_000) })
  await waitFor(() => js.services.pubsub.getMeshPeers(topic).includes(a.peerId) && js.services.pubsub.getMeshPeers(members).includes(a.peerId),
    { what: 'dfs node a in the js mesh of the records and members topics' })
  await waitFor(async () => (await b.peers()).some(p => p.peer_id === a.peerId), { what: 'b connected to a' })
  // b joined a's network as a reader (it asked a for the network id); `dfs id --json` shows the
  // role "reader" for a peer without any grant (it may read).
  const bid = await waitFor(async () => { const id = await b.idNow(); return id.network === network ? id : null }, { what: 'b in a\'s network' })
  assert.equal(bid.role, 'reader', `b: ${show(bid)}`)
})

after(async () => { for (const fn of cleanup.reverse()) await fn() })

test('dfs allow <js peer id> on the owner: a signed writer grant on the members topic, known to both nodes', async (t) => {
  const jsId = js.peerId.toString()
  assert.equal(await a.role(jsId), null, 'js is no member before the grant')
  const message = nextEvent(js.services.pubsub, 'message', { filter: (evt) => evt.detail.topic === members, what: 'the grant on the members topic' })
  await a.cli('allow', jsId)
  const msg = (await message).detail
  assert.equal(msg.type, 'signed')
  assert.ok(msg.data.length <= 1024, 'a grant message is at most 1024 bytes')
  grant = decodeGrant(msg.data) // signature verified with @noble/curves
  t.diagnostic(`grant: ${show({ ...grant, subjectId: undefined, issuerId: undefined })}`)
  assert.equal(grant.network, network)
  assert.equal(grant.subjectId.toString(), jsId)
  assert.equal(grant.issuerId.toString(), a.peerId)
  assert.equal(grant.role, 'writer')
  assert.equal(grant.cutoff, 0n)
  assert.equal(grant.seq, 1n, 'the first object the owner signs')
  for (const node of [a, b]) {
    await waitFor(async () => (await node.role(jsId)) === 'writer', { what: `${node.name}: js is a writer in dfs members` })
  }
  // Anti-entropy sees it too: the root's grants digest is that of { grant }, and `grants` returns it.
  const root = await request(js, peerIdFromString(a.peerId), SYNC, 'root', { limit: SYNC_LIMIT })
  assert.equal(hex(root.root.grants), hex(grantsDigest([grant])))
  const res = await request(js, peerIdFromString(a.peerId), SYNC, { grants: { digest: grantsDigest([]) } }, { limit: SYNC_LIMIT })
  assert.deepEqual(res.grants.grants.map(g => hex(decodeGrant(g).id)), [hex(grant.id)])
  assert.deepEqual(await request(js, peerIdFromString(a.peerId), SYNC, { grants: { digest: grantsDigest([grant]) } }, { limit: SYNC_LIMIT }),
    { grants: { grants: [] } }, 'nothing when the digests are equal')
})

/** Publishes a record signed by js and waits until both dfs nodes hold it locally. */
async function publishAndReplicate (content, record) {
  const bytes = encodeRecord(record)
  assert.ok(bytes.length <= RECORD_LIMIT)
  decodeRecord(bytes) // valid per the spec's rules, signature included
  state.records.set(record.key, record)
  const result = await js.services.pubsub.publish(topic, bytes)
  assert.ok(result.recipients.some(p => p.toString() === a.peerId), 'published to dfs node a')
  for (const node of [a, b]) {
    const stat = await waitFor(async () => {
      const s = await node.stat(key)
      return s.local && s.clock === record.time ? s : null
    }, { timeout: 60_000, interval: 250, what: `${node.name}: stat ${key} local: true at seq ${record.seq}` })
    // `dfs stat` also names the nodes that hold the file (`holders`), this one at least.
    const { holders, ...fields } = stat
    assert.ok(Array.isArray(holders) && holders.includes(node.peerId), `${node.name}: holders ${show(holders)}`)
    assert.deepEqual(fields, {
      key,
      size: content.length,
      content_id: hex(record.cid),
      version: hex(versionId(record)),
      time: Number(record.time >> 16n),
      clock: record.time,
      author: js.peerId.toString(),
      local: true,
      deleted: false,
      damaged: 0,
      conflicts: []
    }, `${node.name}: ${show(stat)}`)
    const got = await node.cliBytes('get', key)
    assert.ok(Buffer.from(got).equals(Buffer.from(content)), `${node.name}: dfs get returns the bytes js published`)
  }
}

test('js, a writer, publishes seq 1 and then seq 2 (replacing it: same author, higher seq): both dfs nodes store them, js the author', async (t) => {
  if (grant == null) t.skip('needs the grant of the previous test')
  const hlc = new Hlc()
  const r1 = signRecord(signer, { key, cid: contentIdOf(first), size: first.length, time: hlc.now() })
  assert.equal(r1.seq, 1n)
  await publishAndReplicate(first, r1)
  // seen stays empty: an author's own earlier versions are implied by its higher seq.
  const r2 = signRecord(signer, { key, cid: contentIdOf(data), size: data.length, time: hlc.now() })
  assert.equal(r2.seq, 2n)
  await publishAndReplicate(data, r2)

  // The nodes answer the record js signed, byte for byte (its signature intact).
  for (const node of [a]) {
    const res = await request(js, peerIdFromString(node.peerId), FETCH, { record: { key } })
    assert.equal(hex(encodeRecord(decodeRecord(res.record.record))), hex(encodeRecord(r2)))
  }

  // The content came from the js node: the chunk list over /dfs/fetch/2, then every chunk over
  // /dfs/chunks/1 (no fetch/2 request other than network, time, record and manifest).
  const cid = contentIdOf(data)
  assert.ok(served.some(r => r.manifest != null && hex(r.manifest.cid) === hex(cid)), `manifest served: ${show(served)}`)
  assert.ok(served.every(r => r === 'network' || r === 'time' || r.manifest != null || r.record != null || r.has != null || r.prove != null), `fetch/2 requests: ${show(served)}`)
  for (const h of [...chunkHashes(first), ...chunkHashes(data)].map(hex)) {
    assert.ok(servedChunks.includes(h), `chunk ${h} asked on ${CHUNKS}: ${servedChunks}`)
  }
  // Each requester closed its write side when done; the js responder then closed the stream.
  await waitFor(() => chunkStreams.length > 0 && chunkStreams.every(s => s.outcome === 'requester closed'),
    { timeout: 35_000, what: `every ${CHUNKS} stream closed by its requester: ${show(chunkStreams)}` })
  t.diagnostic(`${CHUNKS} streams served by js: ${show(chunkStreams)}; fetch/2 requests: ${show(served.map(r => typeof r === 'string' ? r : Object.keys(r)[0]))}`)
})

test('one number, one record: a second record under seq 2 by a writer counts as a version and flags its author; seq 3 is stored', async (t) => {
  if (grant == null || signer.seq < 2) t.skip('needs the records of the previous test')
  const hlc = new Hlc()
  hlc.observe(state.records.get(key).time)
  const reused = signRecord(signer, { key: 'from-js/reused.bin', cid: contentIdOf(first), size: first.length, time: hlc.now(), seq: 2 })
  const third = signRecord(signer, { key: 'from-js/third.bin', cid: contentIdOf(first), size: first.length, time: hlc.now() })
  assert.equal(third.seq, 3n)
  for (const r of [reused, third]) {
    state.records.set(r.key, r)
    await js.services.pubsub.publish(topic, encodeRecord(r))
  }
  // Gossip from one peer arrives in order: once seq 3 is stored, the reused seq 2 was judged.
  for (const node of [a, b]) {
    await waitFor(async () => (await node.stat(third.key)).local, { timeout: 30_000, interval: 250, what: `${node.name}: seq 3 stored` })
    // PROTOCOL.md, "Trust", rule 6: while its author may write, both records under one number
    // count (every node ends with the same set); the author is flagged.
    await waitFor(async () => (await node.ls()).some(s => s.key === reused.key), { timeout: 30_000, interval: 250, what: `${node.name}: the record reusing seq 2 is stored as a version` })
    assert.equal((await node.stat(key)).clock, state.records.get(key).time, `${node.name}: seq 2's first record is still the current one of its key`)
    const me = (await node.members()).find(m => m.peer_id === signer.peerId.toString())
    assert.equal(me?.equivocated, true, `${node.name}: the author is flagged: ${JSON.stringify(me)}`)
  }
})

test('validation: a writer\'s records that break a rule are refused; 2 minutes ahead, 64 seen entries, another field order with an unknown field are accepted', async (t) => {
  if (grant == null || signer.seq < 3) t.skip('needs the records of the previous tests')
  const hlc = new Hlc()
  hlc.observe(state.records.get('from-js/third.bin').time)
  const base = { cid: contentIdOf(first), size: first.length }
  // Other authors' dots (real ed25519 peer ids, none of them a member: a causal context names
  // whatever versions the writer saw), sorted byte-wise by author as the spec wants.
  const others = Array.from({ length: 65 }, (_, i) => new Signer(new Uint8Array(32).fill(0x40 + i)).author).sort(compareBytes)
  const bad = [
    ['a time 1 hour ahead', signRecord(signer, { key: 'from-js/bad-future.bin', ...base, time: (BigInt(Date.now()) + 3_600_000n) << 16n, seq: 101 })],
    ['65 seen entries', signRecord(signer, { key: 'from-js/bad-seen-65.bin', ...base, time: hlc.now(), seq: 102, seen: others.map(a => [a, 1]) })],
    ['seen entries out of order', signRecord(signer, { key: 'from-js/bad-seen-unsorted.bin', ...base, time: hlc.now(), seq: 103, seen: [[others[1], 1], [others[0], 1]] })],
    ['a tombstone with a size', signRecord(signer, { key: 'from-js/bad-tombstone.bin', cid: null, size: 5, time: hlc.now(), seq: 104 })],
    ['a key with a NUL', signRecord(signer, { key: 'from-js/bad\0key.bin', ...base, time: hlc.now(), seq: 105 })],
    ['a key with a terminal escape', signRecord(signer, { key: 'from-js/\x1b[2Jbad.bin', ...base, time: hlc.now(), seq: 106 })],
    ['a key with a .. segment', signRecord(signer, { key: 'from-js/../bad.bin', ...base, time: hlc.now(), seq: 107 })],
    ['a key with a leading /', signRecord(signer, { key: '/from-js/bad.bin', ...base, time: hlc.now(), seq: 108 })]
  ]
  for (const [what, r] of bad) {
    assert.ok(verifyRecord(r), `${what}: correctly signed`)
    assert.throws(() => decodeRecord(encodeRecord(r)), undefined, `${what}: the js validation refuses it too`)
    await js.services.pubsub.publish(topic, encodeRecord(r))
  }
  // Then valid ones: a record 2 minutes ahead (within 10 minutes: it counts), one with 64 seen
  // entries (the most; its message is over format 2's 2048 bytes), ...
  const ahead = signRecord(signer, { key: 'from-js/ahead.bin', ...base, time: (BigInt(Date.now()) + 120_000n) << 16n })
  const wide = signRecord(signer, { key: 'from-js/seen-64.bin', ...base, time: hlc.now(), seen: others.slice(0, 64).map(a => [a, 1]) })
  assert.ok(encodeRecord(wide).length > 2048 && encodeRecord(wide).length <= RECORD_LIMIT, `${encodeRecord(wide).length} bytes`)
  for (const r of [ahead, wide]) {
    decodeRecord(encodeRecord(r))
    state.records.set(r.key, r)
    await js.services.pubsub.publish(topic, encodeRecord(r))
  }
  // ... and one with its fields in reverse order and an unknown field (not signed).
  const good = signRecord(signer, { key: 'from-js/reordered.bin', ...base, time: hlc.now() })
  const m = recordMap(good)
  const reordered = encode({ extra: 'unknown', ...Object.fromEntries(Object.entries(m).reverse()) })
  assert.notEqual(hex(reordered), hex(encodeRecord(good)))
  state.records.set(good.key, good)
  await js.services.pubsub.publish(topic, reordered)
  for (const node of [a, b]) {
    for (const [what, r] of [['the reordered record', good], ['the record 2 minutes ahead', ahead], ['the record with 64 seen entries', wide]]) {
      const st = await waitFor(async () => { const s = await node.stat(r.key); return s.local ? s : null }, { timeout: 30_000, interval: 250, what: `${node.name}: ${what} stored` })
      assert.equal(st.clock, r.time, `${node.name}: ${what}: its own clock, ahead or not`)
      assert.equal(st.version, hex(versionId(r)))
    }
    const keys = (await node.ls()).map(s => s.key)
    for (const [what, r] of bad) assert.ok(!keys.includes(r.key), `${node.name}: ${what} is not stored`)
  }
  // The node holds the record as signed: it answers it in table order, without the unknown field.
  const res = await request(js, peerIdFromString(a.peerId), FETCH, { record: { key: good.key } })
  assert.equal(hex(encode(res.record.record)), hex(encodeRecord(good)), 'the canonical eight fields')
})
