// 6. A malformed /dfs/chunks/1 request frame (count 0, or 65 > 64) gets an error reply (0x02,
// "len: u16 (≤ 1024)", UTF-8) and the responder closes the stream after it; the node keeps
// serving: correct streams on the same connection and on a fresh connection still work.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { DfsNode } from '../lib/dfs.mjs'
import { createJsNode } from '../lib/jsnode.mjs'
import { ChunkStream, fetchChunks, chunkHashes, chunkLengths, hex, show, MAX_ERROR_LEN, CHUNK_SIZE } from '../lib/proto.mjs'

const data = new Uint8Array(randomBytes(CHUNK_SIZE + 1000)) // 2 chunks
const hashes = chunkHashes(data)
const cleanup = []
let dfs, js, conn

before(async () => {
  dfs = await DfsNode.start({ name: 'malformed' })
  cleanup.push(() => dfs.stop())
  await dfs.put('malformed/file.bin', data)
  js = await createJsNode({ pubsub: false, listen: false })
  cleanup.push(() => js.stop())
  conn = await js.dial(multiaddr(dfs.addr), { signal: AbortSignal.timeout(10_000) })
})

after(async () => { for (const fn of cleanup.reverse()) await fn() })

/** Reads the error reply that must come next, then the end of the stream. */
async function expectErrorAndClose (t, cs, what) {
  const r = await cs.reply()
  assert.equal(r?.type, 'error', `${what}: an error reply, got ${show(r)}`)
  assert.ok(r.message.length > 0 && new TextEncoder().encode(r.message).length <= MAX_ERROR_LEN, `${what}: message ${show(r.message)}`)
  t.diagnostic(`${what}: error ${JSON.stringify(r.message)}`)
  assert.equal(await cs.end(), true, `${what}: the responder closes the stream after the error (clean end, no more bytes)`)
  assert.equal(cs.stream.remoteWriteStatus, 'closed', `${what}: the responder's write side is closed`)
  await cs.finish()
}

test('a frame of count 0 gets an error reply and the stream is closed', async (t) => {
  const cs = await ChunkStream.open(js, conn.remotePeer)
  await cs.sendRaw(new Uint8Array([0x00, 0x00]))
  await expectErrorAndClose(t, cs, 'count 0')
})

test('a frame of count 65 gets an error reply and the stream is closed', async (t) => {
  // Only the count is sent: a responder refuses the frame from its count alone (at most 64).
  const cs = await ChunkStream.open(js, conn.remotePeer)
  await cs.sendRaw(new Uint8Array([0x00, 0x41]))
  await expectErrorAndClose(t, cs, 'count 65')
})

test('a malformed frame after a correct one: the chunk, then the error, then the close', async (t) => {
  const cs = await ChunkStream.open(js, conn.remotePeer)
  await cs.request([hashes[1]])
  await cs.sendRaw(new Uint8Array([0x00, 0x00]))
  const first = await cs.reply()
  assert.equal(first?.type, 'chunk', `the correct frame is answered first: ${show(first)}`)
  assert.equal(hex(first.hash), hex(hashes[1]))
  assert.ok(Buffer.from(first.data).equals(Buffer.from(data.subarray(CHUNK_SIZE))))
  await expectErrorAndClose(t, cs, 'count 0 after a correct frame')
})

test('the node keeps serving: the same connection and a fresh one', async () => {
  assert.equal(conn.status, 'open', 'the connection survived the malformed frames')
  const same = await fetchChunks(js, conn.remotePeer, hashes, { perFrame: 1, inFlight: 2, lengths: chunkLengths(data.length) })
  assert.ok(Buffer.concat(same.chunks).equals(Buffer.from(data)), 'same connection: the whole file')

  const fresh = await createJsNode({ pubsub: false, listen: false })
  cleanup.push(() => fresh.stop())
  const conn2 = await fresh.dial(multiaddr(dfs.addr), { signal: AbortSignal.timeout(10_000) })
  const other = await fetchChunks(fresh, conn2.remotePeer, hashes, { perFrame: 2, inFlight: 1, lengths: chunkLengths(data.length) })
  assert.ok(Buffer.concat(other.chunks).equals(Buffer.from(data)), 'fresh connection: the whole file')
  assert.equal(dfs.exited, false, 'the dfs node is still running')
})
