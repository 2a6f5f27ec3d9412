// 2. The records topic: a `dfs put` reaches a js gossipsub subscriber as a signed record.
// 3. The js node fetches that file over /dfs/fetch/1 and verifies it with its own BLAKE3.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { blake3 } from '@noble/hashes/blake3.js'
import { DfsNode, waitFor, nextEvent } from '../lib/dfs.mjs'
import { createJsNode } from '../lib/jsnode.mjs'
import { MESHSUB, encodeRpc, decodePublished, splitFrames } from '../lib/meshsub.mjs'
import {
  recordsTopic, decodeRecord, contentIdOf, chunkHashes, contentId, fetchManifest, fetchChunk, request,
  hex, show, FETCH, CHUNK_SIZE
} from '../lib/proto.mjs'

const network = 'interop-records'
const topic = recordsTopic(network)
const key = 'dir/interop file ✓.bin'
const data = new Uint8Array(randomBytes(2.5 * CHUNK_SIZE)) // 3 chunks, the last one half full
let dfs, js, dfsPeer
let raw, rawOut // a bare peer speaking raw /meshsub/1.1.0 (no gossipsub implementation)
const rawPublished = new EventTarget()
let received // { record, msg, msgId }

before(async () => {
  dfs = await DfsNode.start({ network, name: 'records' })
  js = await createJsNode({ listen: false })
  js.services.pubsub.subscribe(topic)
  const conn = await js.dial(multiaddr(dfs.addr), { signal: AbortSignal.timeout(10_000) })
  dfsPeer = conn.remotePeer
  // Both sides subscribed and grafted: the dfs node is in our mesh for the records topic.
  await waitFor(() => js.services.pubsub.getMeshPeers(topic).includes(dfs.peerId),
    { timeout: 20_000, what: 'the dfs node in the js mesh of the records topic' })

  raw = await createJsNode({ pubsub: false, listen: false })
  await raw.handle(MESHSUB, async (stream) => {
    let buf = new Uint8Array(0)
    try {
      for await (const chunk of stream) {
        buf = Buffer.concat([buf, chunk instanceof Uint8Array ? chunk : chunk.subarray()])
        const [frames, rest] = splitFrames(buf)
        buf = rest
        for (const f of frames) for (const m of decodePublished(f)) rawPublished.dispatchEvent(new CustomEvent('message', { detail: m }))
      }
    } catch {}
  })
  await raw.dial(multiaddr(dfs.addr), { signal: AbortSignal.timeout(10_000) })
  rawOut = await raw.dialProtocol(dfsPeer, MESHSUB, { signal: AbortSignal.timeout(10_000) })
  rawOut.send(encodeRpc({})) // an empty RPC: a gossipsub peer with no subscriptions
})

after(async () => {
  await raw?.stop()
  await js?.stop()
  await dfs?.stop()
})

test('a dfs put reaches the js subscriber as a signed, decodable record', async () => {
  const ids = []
  const onGossip = (evt) => ids.push(evt.detail)
  js.services.pubsub.addEventListener('gossipsub:message', onGossip)
  const message = nextEvent(js.services.pubsub, 'message', {
    filter: (evt) => evt.detail.topic === topic, timeout: 20_000, what: 'the record on the records topic'
  })
  const before = Date.now()
  const stat = await dfs.put(key, data)
  const msg = (await message).detail
  js.services.pubsub.removeEventListener('gossipsub:message', onGossip)

  // StrictSign: signed, from the dfs node.
  assert.equal(msg.type, 'signed')
  assert.equal(msg.from.toString(), dfs.peerId)
  assert.ok(msg.signature?.length > 0 && msg.key != null && msg.sequenceNumber != null)
  // Message id = BLAKE3(data).
  const gm = ids.find(d => d.msg.data != null && Buffer.from(d.msg.data).equals(Buffer.from(msg.data)))
  assert.ok(gm, 'gossipsub:message event for the record')
  assert.equal(gm.msgId, hex(blake3(msg.data)), 'message id = BLAKE3(data)')

  assert.ok(msg.data.length <= 2048, 'a record message is at most 2048 bytes')
  const record = decodeRecord(msg.data)
  assert.equal(record.key, key)
  assert.equal(record.size, BigInt(data.length))
  assert.equal(hex(record.cid), hex(contentIdOf(data)), 'cid per the content id formula')
  assert.equal(record.authorId.toString(), dfs.peerId)
  const ms = Number(record.time >> 16n)
  assert.ok(ms >= before - 1000 && ms <= Date.now() + 1000, `time ${ms} is an HLC of now`)
  // The CLI shows the same record.
  assert.equal(stat.content_id, hex(record.cid))
  assert.equal(stat.version, record.time)
  assert.equal(stat.author, dfs.peerId)
  received = { record, msg }

  // The dfs node's message id is BLAKE3(data) too: a raw gossipsub peer that never saw the
  // message asks for that id (IWANT) and gets it from the dfs node's message cache (which keeps
  // a message for a few heartbeats only, hence right away).
  const viaIwant = nextEvent(rawPublished, 'message', {
    filter: (evt) => evt.detail.topic === topic && Buffer.from(evt.detail.data).equals(Buffer.from(msg.data)),
    timeout: 5_000,
    what: 'the record, answered to IWANT BLAKE3(data)'
  })
  rawOut.send(encodeRpc({ iwant: [blake3(msg.data)] }))
  const answered = (await viaIwant).detail
  assert.equal(hex(answered.from), hex(msg.from.toMultihash().bytes))
})

test('the js node fetches the file over /dfs/fetch/1 chunk by chunk and verifies it', async (t) => {
  if (received == null) t.skip('needs the record of the previous test')
  const { record } = received

  // The record request returns the same record.
  const res = await request(js, dfsPeer, FETCH, { record: { key } })
  // {"record": {"record": <record map>}} (externally tagged variant with one field `record`)
  assert.ok(res.record?.record != null, `record answer: ${show(res)}`)
  const current = decodeRecord(res.record.record)
  assert.equal(current.time, record.time)
  assert.equal(hex(current.cid), hex(record.cid))

  // Chunk list, checked against total = ceil(size / 1 MiB) and the content id.
  const hashes = await fetchManifest(js, dfsPeer, record.cid, record.size)
  assert.equal(hashes.length, 3)
  assert.deepEqual(hashes.map(hex), chunkHashes(data).map(hex))
  assert.equal(hex(contentId(data.length, hashes)), hex(record.cid))

  // Chunk by chunk, each checked against its BLAKE3 hash.
  const parts = []
  for (const h of hashes) parts.push(await fetchChunk(js, dfsPeer, h))
  assert.deepEqual(parts.map(p => p.length), [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE / 2])
  assert.ok(Buffer.concat(parts).equals(Buffer.from(data)), 'assembled bytes equal the original')

  // What the node does not have: not_found.
  assert.equal(await request(js, dfsPeer, FETCH, { chunk: { hash: new Uint8Array(32).fill(7) } }), 'not_found')
  assert.equal(await request(js, dfsPeer, FETCH, { manifest: { cid: new Uint8Array(32).fill(7), offset: 0 } }), 'not_found')
  assert.equal(await request(js, dfsPeer, FETCH, { record: { key: 'no such key' } }), 'not_found')
})
