// 4. The js node writes: it publishes a record (built per "Records") for content it holds and
// serves that content (chunk list over /dfs/fetch/2, chunks over /dfs/chunks/1); two dfs nodes
// (the second bootstrapped only to the first) replicate it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { DfsNode, waitFor } from '../lib/dfs.mjs'
import { createJsNode } from '../lib/jsnode.mjs'
import {
  recordsTopic, encodeRecord, decodeRecord, contentIdOf, chunkHashes, fetchHandler, chunksHandler, Hlc, hex, show,
  FETCH, CHUNKS, CHUNK_SIZE
} from '../lib/proto.mjs'

const network = 'interop-jswrite'
const topic = recordsTopic(network)
const key = 'from-js/payload.bin'
const data = new Uint8Array(randomBytes(Math.floor(1.5 * CHUNK_SIZE) + 3)) // 2 chunks
const cleanup = []
let a, b, js
const served = [] // the fetch/2 requests the js node answered
const servedChunks = [] // the chunk hashes (hex) asked of the js node on /dfs/chunks/1
const chunkStreams = [] // { frames, hashes, outcome } of each /dfs/chunks/1 stream

before(async () => {
  a = await DfsNode.start({ network, name: 'a' })
  cleanup.push(() => a.stop())
  b = await DfsNode.start({ network, name: 'b', bootstrap: [a.addr] })
  cleanup.push(() => b.stop())
  js = await createJsNode({ listen: true })
  cleanup.push(() => js.stop())
  await js.handle(FETCH, fetchHandler([data], served))
  await js.handle(CHUNKS, chunksHandler([data], servedChunks, { streams: chunkStreams }))
  js.services.pubsub.subscribe(topic)
  await js.dial(multiaddr(a.addr), { signal: AbortSignal.timeout(10_000) })
  await waitFor(() => js.services.pubsub.getMeshPeers(topic).includes(a.peerId),
    { what: 'dfs node a in the js mesh of the records topic' })
  await waitFor(async () => (await b.peers()).some(p => p.peer_id === a.peerId), { what: 'b connected to a' })
})

after(async () => { for (const fn of cleanup.reverse()) await fn() })

test('a record published by js is replicated by two dfs nodes, content fetched from js', async (t) => {
  const cid = contentIdOf(data)
  const time = new Hlc().now()
  const author = js.peerId.toMultihash().bytes
  const bytes = encodeRecord({ key, cid, size: data.length, time, author })
  decodeRecord(bytes) // valid per the spec's rules
  const result = await js.services.pubsub.publish(topic, bytes)
  assert.ok(result.recipients.some(p => p.toString() === a.peerId), 'published to dfs node a')

  for (const node of [a, b]) {
    const stat = await waitFor(async () => {
      const s = await node.stat(key)
      return s.local ? s : null
    }, { timeout: 60_000, interval: 250, what: `${node.name}: stat ${key} local: true` })
    assert.deepEqual(stat, {
      key,
      size: data.length,
      content_id: hex(cid),
      version: time,
      author: js.peerId.toString(),
      local: true,
      deleted: false
    }, `${node.name}: ${show(stat)}`)
    const got = await node.cliBytes('get', key)
    assert.ok(Buffer.from(got).equals(Buffer.from(data)), `${node.name}: dfs get returns the bytes js published`)
  }

  // The content came from the js node: the chunk list over /dfs/fetch/2, then every chunk over
  // /dfs/chunks/1 (no fetch/2 request other than record and manifest).
  assert.ok(served.some(r => r.manifest != null && hex(r.manifest.cid) === hex(cid)), `manifest served: ${show(served)}`)
  assert.ok(served.every(r => r.manifest != null || r.record != null), `fetch/2 requests: ${show(served)}`)
  for (const h of chunkHashes(data).map(hex)) {
    assert.ok(servedChunks.includes(h), `chunk ${h} asked on ${CHUNKS}: ${servedChunks}`)
  }
  // Each requester closed its write side when done; the js responder then closed the stream.
  await waitFor(() => chunkStreams.length > 0 && chunkStreams.every(s => s.outcome === 'requester closed'),
    { timeout: 35_000, what: `every ${CHUNKS} stream closed by its requester: ${show(chunkStreams)}` })
  t.diagnostic(`${CHUNKS} streams served by js: ${show(chunkStreams)}`)
})
