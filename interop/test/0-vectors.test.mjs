// The test vectors of docs/PROTOCOL.md (record format 3: those of tests/it/wire_vectors.rs), against this
// independent (js) implementation of the spec.
// They need no dfs node; they make sure the js side of the other tests speaks the spec.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { blake3 } from '@noble/hashes/blake3.js'
import { ed25519 } from '@noble/curves/ed25519.js'
import { generateKeyPairFromSeed, publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import * as Digest from 'multiformats/hashes/digest'
import {
  hex, fromHex, encode, decode, encodeRecord, decodeRecord, contentIdOf, Signer, signRecord, recordSignedBytes,
  versionId, fingerprint, verifyRecord, publicKeyOf, recordMap, saw, dotOf, signGrant, encodeGrant, grantSignedBytes, grantId,
  decodeGrant, grantsDigest, keyHash, syncTree,
  encodeChunkRequest, encodeChunkReply, encodeNotFoundReply, encodeErrorReply, readChunkReply, ByteReader
} from '../lib/proto.mjs'

const te = new TextEncoder()

test('BLAKE3 vector', () => {
  assert.equal(hex(blake3(te.encode('hello'))), 'ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f')
})

// The vectors' keys: ed25519 secrets of 32 bytes of 0x01 (the owner, the records' author) and 0x02.
const ONE = new Uint8Array(32).fill(1)
const TWO = new Uint8Array(32).fill(2)
const OWNER = '12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5'
const RECORD = 'a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607'
const SIGNED = '6466732f7265636f72642f3300a7636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e80'
const VERSION_ID = '0918c1dace02fc0fea981cbf6da6a312f91447064c08fcd18cc2a9628e734e75'
const TOMBSTONE = 'a8636b65796968656c6c6f2e74787463636964f66473697a65006474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657102647365656e80637369675840aecf5b9dda8ad18fa8135c9011a2d01bdd04927cd64aadbaba4feff1b8624e4b88ee4d68d0451e118fcacb16a23ab4bb2b18a49f6e7ef052b38efc1440ab6c0e'
const TAMPERED = 'a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65066474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607'
// A write by the key 0x02 that saw the first record: seen [[author of 0x01, 1]], one tick later, content "world".
const LATER = 'a8636b65796968656c6c6f2e747874636369645820e1174b4b6d4fa0500f3c0a13452c78ace67f9164306874cf14676614a68929496473697a65056474696d651b000001900000000166617574686f7258260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3946373657101647365656e818258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c016373696758403029239d3c014fa0f309158a05b5314cd9317be1dad13c0788dd39b58ecff222af1611732e31c526454fe4c1d609b293bbafdf8abe63260b7a57c3f1933c2809'
const LATER_ID = '47acfdda23c15f4d8b5c8e6a94baeef457efd8066cb41961a9605906c205978d'
const GRANT = 'a8676e6574776f726b7834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835677375626a65637458260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39464726f6c6566777269746572666375746f6666006474696d651b00000190000000006669737375657258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c63736571026373696758407e8b7cbd86e25f98f4d7a9162b71d42aafa26dec97c7ee6c6973c8ef2e8584ac1d3504c5d6aeaccfc7e4df300c08004b4217c06c769a9f6ffa929a10b20c920d'
const GRANT_ID = '5e029b663dd38dd2c1705cb7e214a60d8324a63fff476bc4982500a588f4cc12'
const HELLO = { key: 'hello.txt', cid: contentIdOf(te.encode('hello')), size: 5, time: 0x0000019000000000n }

test('the vector keys: ed25519 peer ids (identity multihash of the protobuf key), from @noble/curves and from libp2p', async () => {
  const one = new Signer(ONE)
  assert.equal(one.peerId.toString(), OWNER)
  assert.equal(new Signer(TWO).peerId.toString(), '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq')
  // libp2p's own key derivation agrees, and a Signer made from a libp2p key signs with it.
  const key = await generateKeyPairFromSeed('Ed25519', ONE)
  assert.equal(peerIdFromPrivateKey(key).toString(), OWNER)
  const fromLibp2p = Signer.fromLibp2p(key)
  assert.equal(hex(fromLibp2p.author), hex(one.author))
  assert.equal(hex(publicKeyOf(one.author)), hex(key.publicKey.raw))
  const msg = te.encode('x')
  assert.ok(await key.publicKey.verify(msg, fromLibp2p.sign(msg)), 'libp2p verifies a @noble/curves signature')
})

test('signed record vector: encoding, signed bytes, version id, fingerprint, signature', async () => {
  const one = new Signer(ONE)
  const record = signRecord(one, { ...HELLO, seq: 1 })
  assert.equal(hex(encodeRecord(record)), RECORD, 'signing the vector fields gives the vector (ed25519 is deterministic)')
  assert.equal(hex(recordSignedBytes(record)), SIGNED)
  assert.ok(hex(recordSignedBytes(record)).startsWith(hex(te.encode('dfs/record/3')) + '00a7'), 'domain, 0x00, a 7-entry map')
  assert.ok(hex(recordSignedBytes(record)).endsWith(hex(encode('seen')) + '80'), 'the 7th field: seen, an empty array')
  assert.equal(hex(versionId(record)), VERSION_ID)
  assert.equal(hex(blake3(fromHex(SIGNED))), VERSION_ID)
  assert.equal(fingerprint(record), 0x0918c1dace02fc0fn)

  // Decoding re-encodes the received fields and verifies the signature with @noble/curves ...
  const back = decodeRecord(fromHex(RECORD))
  assert.equal(back.key, 'hello.txt')
  assert.equal(back.size, 5n)
  assert.equal(back.seq, 1n)
  assert.deepEqual(back.seen, [])
  assert.equal(back.authorId.toString(), OWNER)
  assert.equal(hex(back.versionId), VERSION_ID)
  assert.ok(ed25519.verify(back.sig, fromHex(SIGNED), publicKeyOf(back.author)))
  // ... and libp2p's crypto agrees (a second, independent ed25519).
  const pub = publicKeyFromProtobuf(Digest.decode(back.author).digest)
  assert.ok(await pub.verify(fromHex(SIGNED), back.sig), 'libp2p crypto verifies the vector signature')

  // Field order on the wire does not matter: the receiver re-encodes; unknown fields are ignored.
  const m = decode(fromHex(RECORD))
  const shuffled = encode({ sig: m.sig, extra: 'not signed', seen: m.seen, seq: m.seq, author: m.author, time: m.time, size: m.size, cid: m.cid, key: m.key })
  const again = decodeRecord(shuffled)
  assert.equal(hex(again.versionId), VERSION_ID)
  assert.equal(hex(encodeRecord(again)), RECORD, 're-encoded in table order, the unknown field dropped')
})

test('tombstone vector: seq 2, seen empty (its author\'s seq 1 is implied), signed; it saw the first version', () => {
  const one = new Signer(ONE)
  const tomb = signRecord(one, { key: 'hello.txt', cid: null, size: 0, time: 0x0000019000000000n, seq: 2 })
  assert.equal(hex(encodeRecord(tomb)), TOMBSTONE)
  const back = decodeRecord(fromHex(TOMBSTONE))
  assert.equal(back.cid, null)
  assert.equal(back.size, 0n)
  assert.equal(back.seq, 2n)
  assert.deepEqual(back.seen, [])
  assert.ok(verifyRecord(back))
  const first = decodeRecord(fromHex(RECORD))
  assert.ok(saw(back, first), 'same author, higher seq: the tombstone replaces the first record, whatever the clocks')
  assert.ok(!saw(first, back))
})

test('a write by another author that saw the first (seen [[author 0x01, 1]]): encoding, version id, causality', async () => {
  const one = new Signer(ONE)
  const two = new Signer(TWO)
  const first = decodeRecord(fromHex(RECORD))
  const tomb = decodeRecord(fromHex(TOMBSTONE))
  const later = signRecord(two, { key: 'hello.txt', cid: contentIdOf(te.encode('world')), size: 5, time: 0x0000019000000001n, seq: 1, seen: [dotOf(first)] })
  assert.equal(hex(encodeRecord(later)), LATER, 'signing the vector fields gives the vector')
  const back = decodeRecord(fromHex(LATER))
  assert.equal(back.authorId.toString(), two.peerId.toString())
  assert.equal(back.seen.length, 1)
  assert.equal(hex(back.seen[0][0]), hex(one.author))
  assert.equal(back.seen[0][1], 1n)
  assert.equal(hex(back.versionId), LATER_ID)
  const pub = publicKeyFromProtobuf(Digest.decode(back.author).digest)
  assert.ok(await pub.verify(recordSignedBytes(back), back.sig), 'libp2p crypto verifies it')
  assert.ok(saw(back, first), 'it saw the first record: it replaces it')
  assert.ok(!saw(back, tomb), 'it did not see the tombstone (seq 2): they are concurrent')
  assert.ok(!saw(first, back) && !saw(tomb, back))
})

test('causal context rules: at most 64 entries, sorted strictly by author bytes, not its own author, seq >= 1', () => {
  const two = new Signer(TWO)
  const authors = Array.from({ length: 65 }, (_, i) => new Signer(new Uint8Array(32).fill(i + 10)).author)
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  const base = { key: 'hello.txt', cid: contentIdOf(te.encode('world')), size: 5, time: 0x0000019000000001n, seq: 1 }
  const ok = signRecord(two, { ...base, seen: authors.slice(0, 64).map(a => [a, 1]) })
  assert.equal(decodeRecord(encodeRecord(ok)).seen.length, 64, '64 entries are valid')
  assert.ok(encodeRecord(ok).length > 2048 && encodeRecord(ok).length <= 8192, `${encodeRecord(ok).length} bytes: over format 2's 2048, within 8192`)
  const bad = [
    ['65 entries', authors.map(a => [a, 1]), /more than 64/],
    ['unsorted', [[authors[1], 1], [authors[0], 1]], /not sorted/],
    ['an author twice', [[authors[0], 1], [authors[0], 2]], /not sorted strictly/],
    ['its own author', [[two.author, 1]], /own author/],
    ['seq 0', [[authors[0], 0]], /zero seq/]
  ]
  for (const [what, seen, err] of bad) {
    const r = signRecord(two, { ...base, seen })
    assert.ok(verifyRecord(r), `${what}: correctly signed`)
    assert.throws(() => decodeRecord(encodeRecord(r)), err, what)
  }
})

test('the clock bound: up to 10 minutes ahead of now counts, more is refused', () => {
  const two = new Signer(TWO)
  const now = 1_800_000_000_000
  const at = (ms) => encodeRecord(signRecord(two, { key: 'k', cid: contentIdOf(te.encode('world')), size: 5, time: BigInt(ms) << 16n, seq: 1 }))
  decodeRecord(at(now + 2 * 60_000), { now })
  decodeRecord(at(now + 10 * 60_000), { now })
  assert.throws(() => decodeRecord(at(now + 10 * 60_000 + 1), { now }), /10 minutes ahead/)
  assert.throws(() => decodeRecord(at(now + 3_600_000), { now }), /10 minutes ahead/)
})

test('tampered record vector (size 6): the signature does not verify', async () => {
  const m = decode(fromHex(TAMPERED))
  assert.equal(m.size, 6)
  assert.equal(hex(m.sig), hex(decode(fromHex(RECORD)).sig), 'the first record\'s signature')
  assert.throws(() => decodeRecord(fromHex(TAMPERED)), /signature does not verify/)
  assert.equal(verifyRecord(decodeRecord(fromHex(TAMPERED), { verify: false })), false)
  const pub = publicKeyFromProtobuf(Digest.decode(m.author).digest)
  assert.equal(await pub.verify(recordSignedBytes(m), m.sig), false, 'libp2p crypto refuses it too')
  // Other forgeries the tests send: a record naming another author than its signer, and one with no valid signature.
  const two = new Signer(TWO)
  const forged = signRecord(two, { ...HELLO, seq: 1, author: new Signer(ONE).author })
  assert.equal(verifyRecord(forged), false, 'signed by 0x02 in the name of 0x01')
  assert.equal(verifyRecord({ ...forged, sig: new Uint8Array(64) }), false, 'a zero signature')
})

test('grant vector: encoding, signature, grant id', async () => {
  const one = new Signer(ONE)
  const two = new Signer(TWO)
  const grant = signGrant(one, { network: OWNER, subject: two.author, role: 'writer', cutoff: 0, time: 0x0000019000000000n, seq: 2 })
  assert.equal(hex(encodeGrant(grant)), GRANT)
  assert.ok(hex(grantSignedBytes(grant)).startsWith(hex(te.encode('dfs/grant/1')) + '00a7'))
  assert.equal(hex(grantId(grant)), GRANT_ID)
  const back = decodeGrant(fromHex(GRANT))
  assert.equal(back.network, OWNER)
  assert.equal(back.role, 'writer')
  assert.equal(back.cutoff, 0n)
  assert.equal(back.seq, 2n)
  assert.equal(back.subjectId.toString(), two.peerId.toString())
  assert.equal(back.issuerId.toString(), OWNER)
  assert.equal(hex(back.id), GRANT_ID)
  const pub = publicKeyFromProtobuf(Digest.decode(back.issuer).digest)
  assert.ok(await pub.verify(grantSignedBytes(back), back.sig), 'libp2p crypto verifies the grant signature')
  // A grant changed after signing does not verify.
  assert.throws(() => decodeGrant(encode({ ...decode(fromHex(GRANT)), role: 'admin' })), /does not verify/)
  // Grants digest: BLAKE3 of the sorted ids.
  assert.equal(hex(grantsDigest([back])), hex(blake3(fromHex(GRANT_ID))))
  assert.equal(hex(grantsDigest([])), hex(blake3(new Uint8Array(0))))
})

test('peers topic vector', () => {
  const one = new Signer(ONE)
  const addr = multiaddr('/ip4/127.0.0.1/tcp/4001').bytes
  assert.equal(hex(encode({ peer_id: one.author, addrs: [addr], time: 1700000000000 })), 'a367706565725f696458260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6561646472738148047f000001060fa16474696d651b0000018bcfe56800')
})

test('fetch/2 and sync message vectors', () => {
  const aa = new Uint8Array(32).fill(0xaa)
  const cc = new Uint8Array(32).fill(0xcc)
  const dd = new Uint8Array(32).fill(0xdd)
  const cases = [
    [{ record: { key: 'hello.txt' } }, 'a1667265636f7264a1636b65796968656c6c6f2e747874'],
    [{ manifest: { cid: aa, offset: 0 } }, 'a1686d616e6966657374a2636369645820' + 'aa'.repeat(32) + '666f666673657400'],
    [{ manifest: { total: 1, offset: 0, chunks: [cc] } }, 'a1686d616e6966657374a365746f74616c01666f666673657400666368756e6b73815820' + 'cc'.repeat(32)],
    ['not_found', '696e6f745f666f756e64'],
    [{ error: { message: 'x' } }, 'a1656572726f72a1676d6573736167656178'],
    ['network', '676e6574776f726b'],
    ['time', '6474696d65'],
    [{ time: { ms: 1700000000000 } }, 'a16474696d65a1626d731b0000018bcfe56800'],
    [{ network: { id: OWNER } }, 'a1676e6574776f726ba16269647834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835'],
    ['root', '64726f6f74'],
    [{ root: { root: 1, count: 2 } }, 'a164726f6f74a264726f6f740165636f756e7402'],
    [{ root: { root: 1, count: 2, grants: dd } }, 'a164726f6f74a364726f6f740165636f756e7402666772616e74735820' + 'dd'.repeat(32)],
    [{ leaves: { branches: [3] } }, 'a1666c6561766573a1686272616e636865738103'],
    [{ entries: { entries: [[[1, 2]]] } }, 'a167656e7472696573a167656e74726965738181820102'],
    [{ exchange: { push: [], want: [7] } }, 'a16865786368616e6765a26470757368806477616e748107'],
    [{ grants: { digest: dd } }, 'a1666772616e7473a1666469676573745820' + 'dd'.repeat(32)]
  ]
  for (const [value, want] of cases) {
    assert.equal(hex(encode(value)), want, JSON.stringify(value, (k, x) => x instanceof Uint8Array ? hex(x) : x))
    assert.deepEqual(decode(fromHex(want)), value)
  }
})

test('the answer to a record request (fetch/2 vector)', () => {
  const want = 'a1667265636f7264a1667265636f7264' + RECORD
  const record = signRecord(new Signer(ONE), { ...HELLO, seq: 1 })
  assert.equal(hex(encode({ record: { record: recordMap(record) } })), want)
  const back = decodeRecord(decode(fromHex(want)).record.record)
  assert.equal(back.key, 'hello.txt')
  assert.equal(hex(back.versionId), VERSION_ID)
})

test('sync digest tree: key hash, leaves, branches, root of a record set', () => {
  const record = decodeRecord(fromHex(RECORD))
  const tomb = decodeRecord(fromHex(TOMBSTONE))
  const kh = keyHash('hello.txt')
  assert.equal(kh, new DataView(blake3(te.encode('hello.txt')).buffer).getBigUint64(0))
  const tree = syncTree([record])
  const leaf = Number(kh >> 52n)
  assert.equal(tree.leaves[leaf], 0x0918c1dace02fc0fn)
  assert.equal(tree.branches[Math.floor(leaf / 64)], 0x0918c1dace02fc0fn)
  assert.equal(tree.root, 0x0918c1dace02fc0fn)
  assert.equal(tree.count, 1)
  assert.deepEqual(tree.entries[leaf], [[kh, 0x0918c1dace02fc0fn]])
  assert.equal(syncTree([tomb]).root, fingerprint(tomb))
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
