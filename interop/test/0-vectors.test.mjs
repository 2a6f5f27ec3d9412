// The test vectors of docs/PROTOCOL.md, against this independent (js) implementation of the spec.
// They need no dfs node; they make sure the js side of the other tests speaks the spec.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { blake3 } from '@noble/hashes/blake3.js'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  hex, fromHex, encode, decode, encodeRecord, decodeRecord, contentIdOf,
  encodeChunkRequest, encodeChunkReply, encodeNotFoundReply, encodeErrorReply, readChunkReply, ByteReader
} from '../lib/proto.mjs'

const te = new TextEncoder()

test('BLAKE3 vector', () => {
  assert.equal(hex(blake3(te.encode('hello'))), 'ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f')
})

test('record and tombstone vectors', async () => {
  const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(1))
  const author = peerIdFromPrivateKey(key).toMultihash().bytes
  // The spec's table leaves the cid of "hello" blank; the record vector carries it.
  const cid = contentIdOf(te.encode('hello'))
  const record = encodeRecord({ key: 'hello.txt', cid, size: 5, time: 0x0000019000000000n, author })
  assert.equal(hex(record), 'a5636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c')
  const tomb = encodeRecord({ key: 'hello.txt', cid: null, size: 0, time: 0x0000019000000000n, author })
  assert.equal(hex(tomb), 'a5636b65796968656c6c6f2e74787463636964f66473697a65006474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c')
  const back = decodeRecord(record)
  assert.equal(back.key, 'hello.txt')
  assert.equal(back.size, 5n)
  assert.equal(back.authorId.toString(), peerIdFromPrivateKey(key).toString())
})

test('fetch/2 and sync message vectors', () => {
  const aa = new Uint8Array(32).fill(0xaa)
  const cc = new Uint8Array(32).fill(0xcc)
  const cases = [
    [{ record: { key: 'hello.txt' } }, 'a1667265636f7264a1636b65796968656c6c6f2e747874'],
    [{ manifest: { cid: aa, offset: 0 } }, 'a1686d616e6966657374a2636369645820' + 'aa'.repeat(32) + '666f666673657400'],
    [{ manifest: { total: 1, offset: 0, chunks: [cc] } }, 'a1686d616e6966657374a365746f74616c01666f666673657400666368756e6b73815820' + 'cc'.repeat(32)],
    ['not_found', '696e6f745f666f756e64'],
    [{ error: { message: 'x' } }, 'a1656572726f72a1676d6573736167656178'],
    ['root', '64726f6f74'],
    [{ root: { root: 1, count: 2 } }, 'a164726f6f74a264726f6f740165636f756e7402'],
    [{ leaves: { branches: [3] } }, 'a1666c6561766573a1686272616e636865738103'],
    [{ entries: { entries: [[[1, 2]]] } }, 'a167656e7472696573a167656e74726965738181820102'],
    [{ exchange: { push: [], want: [7] } }, 'a16865786368616e6765a26470757368806477616e748107']
  ]
  for (const [value, want] of cases) {
    assert.equal(hex(encode(value)), want, JSON.stringify(value))
    assert.deepEqual(decode(fromHex(want)), value)
  }
})

test('the answer to a record request (fetch/2 vector)', async () => {
  const want = 'a1667265636f7264a1667265636f7264a5636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c'
  const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(1))
  const author = peerIdFromPrivateKey(key).toMultihash().bytes
  const record = decode(encodeRecord({ key: 'hello.txt', cid: contentIdOf(te.encode('hello')), size: 5, time: 0x0000019000000000n, author }))
  assert.equal(hex(encode({ record: { record } })), want)
  assert.equal(decodeRecord(decode(fromHex(want)).record.record).key, 'hello.txt')
})

// A byte stream delivering `bytes` one byte at a time (the reader must reassemble).
const bytewise = (bytes) => (async function * () { for (const b of bytes) yield new Uint8Array([b]) })()

test('/dfs/chunks/1 frame vectors', async () => {
  const bb = new Uint8Array(32).fill(0xbb)
  assert.equal(hex(encodeChunkRequest([bb])), '0001' + 'bb'.repeat(32))
  assert.equal(hex(encodeChunkReply(te.encode('hello'))), '000000000568656c6c6f')
  assert.equal(hex(encodeNotFoundReply()), '01')
  assert.equal(hex(encodeErrorReply('busy')), '02000462757379')
  assert.throws(() => encodeChunkRequest([]), /1 to 64/)
  assert.throws(() => encodeChunkRequest(new Array(65).fill(bb)), /1 to 64/)

  // The three replies back to back, as a responder writes them, decode in order.
  const reader = new ByteReader(bytewise(fromHex('000000000568656c6c6f' + '01' + '02000462757379')))
  const r1 = await readChunkReply(reader)
  assert.equal(r1.type, 'chunk')
  assert.equal(new TextDecoder().decode(r1.data), 'hello')
  assert.deepEqual(await readChunkReply(reader), { type: 'not_found' })
  assert.deepEqual(await readChunkReply(reader), { type: 'error', message: 'busy' })
  assert.equal(await readChunkReply(reader), null, 'a clean end after the last reply')
  // A reply cut short is an error, not an end.
  await assert.rejects(readChunkReply(new ByteReader(bytewise(fromHex('0000000005686566')))), /ended inside/)
  await assert.rejects(readChunkReply(new ByteReader(bytewise(fromHex('03')))), /unknown reply tag/)
})
