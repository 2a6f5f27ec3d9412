// The test vectors of docs/PROTOCOL.md, against this independent (js) implementation of the spec.
// They need no dfs node; they make sure the js side of the other tests speaks the spec.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { blake3 } from '@noble/hashes/blake3.js'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { hex, fromHex, encode, decode, encodeRecord, decodeRecord, contentIdOf } from '../lib/proto.mjs'

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

test('fetch and sync message vectors', () => {
  const aa = new Uint8Array(32).fill(0xaa)
  const bb = new Uint8Array(32).fill(0xbb)
  const cc = new Uint8Array(32).fill(0xcc)
  const cases = [
    [{ record: { key: 'hello.txt' } }, 'a1667265636f7264a1636b65796968656c6c6f2e747874'],
    [{ chunk: { hash: bb } }, 'a1656368756e6ba164686173685820' + 'bb'.repeat(32)],
    [{ chunk: { data: te.encode('hello') } }, 'a1656368756e6ba164646174614568656c6c6f'],
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
