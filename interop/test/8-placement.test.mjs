// Placement and repair (PROTOCOL.md "Placement and repair", the `has` and `network` rows of
// /dfs/fetch/2, the peers topic's `capacity`, the ticket's `settings`), from the spec alone:
// 1. the vectors: the settings (signed bytes, encoding, signature), the placement draw (fmix64,
//    u, ln, weights) and its two orders, `has` with `keeps`, an announcement with `capacity`;
// 2. end to end: an owner started with --replicas 2 and three writers joined with tickets; the
//    owner's `network` answer carries settings that verify and say 2; after a put, exactly the
//    two members the js placement picks answer `has` with complete and keeps, the others not.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { ed25519 } from '@noble/curves/ed25519.js'
import { publicKeyFromProtobuf, privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import * as Digest from 'multiformats/hashes/digest'
import { DfsNode, waitFor, nextEvent } from '../lib/dfs.mjs'
import { createJsNode } from '../lib/jsnode.mjs'
import {
  hex, fromHex, encode, decode, Signer, signSettings, encodeSettings, settingsSignedBytes, decodeSettings, verifySettings,
  fmix64, placementScore, placementOrder, place, decodeTicket, decodeGrant, contentIdOf, request, show, FETCH, DEFAULT_CAPACITY,
  peersTopic, publicKeyOf
} from '../lib/proto.mjs'

const te = new TextEncoder()
const ONE = new Uint8Array(32).fill(1)
const TWO = new Uint8Array(32).fill(2)
const THREE = new Uint8Array(32).fill(3)
const OWNER = '12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5'
const SETTINGS_SIGNED = '6466732f73657474696e67732f3100a4676e6574776f726b7834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835687265706c69636173036474696d651b0000018bcfe568006669737375657258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c'
const SETTINGS = 'a5676e6574776f726b7834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835687265706c69636173036474696d651b0000018bcfe568006669737375657258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373696758404c0b71f233f44c0865bd84eecc6d51ce48e85947693b77954e4afd2d74cdabc5f3bbdbdd15c627a5eea1d8613ff9cd33fb38982e96d612a7dce853ac18458a0c'
const ANNOUNCE_CAPACITY = 'a467706565725f696458260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6561646472738148047f000001060fa16474696d651b0000018bcfe568006863617061636974791b0000010000000000'
const TIB = 2n ** 40n

describe('vectors', () => {
  test('settings vector: signed bytes, encoding, signature (by the owner, @noble/curves and libp2p)', async () => {
    const one = new Signer(ONE)
    assert.equal(one.peerId.toString(), OWNER)
    const s = signSettings(one, { network: OWNER, replicas: 3, time: 1700000000000 })
    assert.equal(hex(settingsSignedBytes(s)), SETTINGS_SIGNED)
    assert.ok(SETTINGS_SIGNED.startsWith(hex(te.encode('dfs/settings/1')) + '00a4'), 'domain, 0x00, a 4-entry map')
    assert.equal(hex(encodeSettings(s)), SETTINGS, 'signing the vector fields gives the vector (ed25519 is deterministic)')

    const back = decodeSettings(fromHex(SETTINGS))
    assert.equal(back.network, OWNER)
    assert.equal(back.replicas, 3n)
    assert.equal(back.time, 1700000000000n)
    assert.equal(back.issuerId.toString(), OWNER)
    assert.deepEqual(Object.keys(decode(fromHex(SETTINGS))), ['network', 'replicas', 'time', 'issuer', 'sig'], 'fields in table order')
    assert.ok(ed25519.verify(back.sig, fromHex(SETTINGS_SIGNED), one.publicKey))
    const pub = publicKeyFromProtobuf(Digest.decode(back.issuer).digest)
    assert.ok(await pub.verify(fromHex(SETTINGS_SIGNED), back.sig), 'libp2p crypto verifies the settings signature')

    // Changed after signing: does not verify. Signed by another key than the owner's: ignored.
    assert.throws(() => decodeSettings(encode({ ...decode(fromHex(SETTINGS)), replicas: 2 })), /does not verify/)
    const two = new Signer(TWO)
    const foreign = signSettings(two, { network: OWNER, replicas: 3, time: 1700000000000 })
    assert.ok(verifySettings(foreign), 'correctly signed by 0x02')
    assert.throws(() => decodeSettings(encodeSettings(foreign)), /not the network's owner/)
    assert.throws(() => decodeSettings(encodeSettings(signSettings(one, { network: OWNER, replicas: 65, time: 1 }))), /bad replicas/)
    assert.ok(encodeSettings(s).length <= 512)
  })

  test('fmix64 (MurmurHash3 finaliser) with BigInt', () => {
    assert.equal(fmix64(0n), 0n, 'zero is a fixed point')
    // Computed by hand from the definition, step by step.
    let x = 1n
    x ^= x >> 33n; x = (x * 0xff51afd7ed558ccdn) % 2n ** 64n; x ^= x >> 33n; x = (x * 0xc4ceb9fe1a85ec53n) % 2n ** 64n; x ^= x >> 33n
    assert.equal(fmix64(1n), x)
    assert.ok(fmix64(2n ** 64n - 1n) < 2n ** 64n)
  })

  test('placement vectors: content id 32×0xaa, peers of 32×0x01, 0x02, 0x03', (t) => {
    const cid = new Uint8Array(32).fill(0xaa)
    const peers = [ONE, TWO, THREE].map(k => new Signer(k))
    assert.ok(peers[1].peerId.toString().startsWith('12D3KooWJWoaq'))
    assert.ok(peers[2].peerId.toString().startsWith('12D3KooWRndVh'), peers[2].peerId.toString())
    const name = new Map(peers.map((p, i) => [hex(p.author), `0x0${i + 1}`]))
    const order = (caps) => placementOrder(cid, peers.map((p, i) => ({ peer: p.author, capacity: caps[i] })))
    const equal = order([TIB, TIB, TIB])
    for (const c of equal) t.diagnostic(`${name.get(hex(c.peer))}: h=${c.h.toString(16)} u=${c.u} w=${c.w} score=${c.score}`)
    assert.deepEqual(equal.map(c => name.get(hex(c.peer))), ['0x03', '0x02', '0x01'], 'equal capacities')
    // With equal capacities the order is that of h alone (descending).
    assert.deepEqual(equal.map(c => c.h), [...equal.map(c => c.h)].sort((a, b) => (a > b ? -1 : 1)))
    // Default capacity (none announced) = 1 TiB: the same order.
    assert.deepEqual(placementOrder(cid, peers.map(p => ({ peer: p.author }))).map(c => name.get(hex(c.peer))), ['0x03', '0x02', '0x01'])
    const weighted = order([64n * TIB, TIB, TIB])
    for (const c of weighted) t.diagnostic(`64 TiB for 0x01: ${name.get(hex(c.peer))}: w=${c.w} score=${c.score}`)
    assert.deepEqual(weighted.map(c => name.get(hex(c.peer))), ['0x01', '0x03', '0x02'], '64 TiB for 0x01')
    assert.equal(weighted[0].w, 65536, '64 TiB is 65536 GiB')
    assert.equal(placementScore(cid, peers[0].author, 1).w, 1 / 1024, 'weights are at least 1/1024')
    assert.deepEqual(place(cid, peers.map(p => ({ peer: p.author })), 2).map(c => name.get(hex(c.peer))), ['0x03', '0x02'])
    assert.equal(place(cid, peers.map(p => ({ peer: p.author })), 5).length, 3, 'all candidates when there are no more than R')
  })

  test('has with keeps, network with settings, and an announcement with capacity', () => {
    const aa = new Uint8Array(32).fill(0xaa)
    const cases = [
      [{ has: { cid: aa } }, 'a163686173a1636369645820' + 'aa'.repeat(32)],
      [{ has: { complete: true } }, 'a163686173a168636f6d706c657465f5'],
      [{ has: { complete: true, keeps: true } }, 'a163686173a268636f6d706c657465f5656b65657073f5']
    ]
    for (const [value, want] of cases) {
      assert.equal(hex(encode(value)), want, show(value))
      assert.deepEqual(decode(fromHex(want)), value)
    }
    // `keeps` absent means false.
    assert.equal(decode(fromHex('a163686173a168636f6d706c657465f5')).has.keeps ?? false, false)
    // A network answer with settings: `settings` is a byte string holding the settings' CBOR.
    const answer = decode(encode({ network: { id: OWNER, settings: fromHex(SETTINGS) } }))
    assert.equal(decodeSettings(answer.network.settings).replicas, 3n)
    // The peers topic with `capacity` 2^40 (8-byte unsigned).
    const one = new Signer(ONE)
    const addr = multiaddr('/ip4/127.0.0.1/tcp/4001').bytes
    assert.equal(hex(encode({ peer_id: one.author, addrs: [addr], time: 1700000000000, capacity: 2 ** 40 })), ANNOUNCE_CAPACITY)
    const a = decode(fromHex(ANNOUNCE_CAPACITY))
    assert.equal(BigInt(a.capacity), DEFAULT_CAPACITY)
    assert.equal(hex(a.peer_id), hex(one.author))
  })
})

// ---- end to end: an owner with --replicas 2 and three writers joined with tickets ----

const TIMERS = ['--announce-interval-ms', '500', '--sync-interval-ms', '1000', '--repair-interval-ms', '1000']
const R = 2
const WRITERS = 3

describe('placement end to end (--replicas 2, an owner and three writers)', () => {
  let owner, js
  const writers = []
  const tickets = []
  const peerOf = new Map() // node -> its libp2p peer id (in js)

  before(async () => {
    owner = await DfsNode.start({ name: 'place-owner', args: ['--replicas', String(R), ...TIMERS] })
    for (let i = 1; i <= WRITERS; i++) {
      const { ticket } = JSON.parse(await owner.cli('invite', '--json'))
      tickets.push(ticket)
      writers.push(await DfsNode.start({ name: `place-w${i}`, args: ['--join', ticket, ...TIMERS] }))
    }
    js = await createJsNode({ pubsub: false, listen: false })
    for (const n of [owner, ...writers]) {
      const conn = await js.dial(multiaddr(n.addr), { signal: AbortSignal.timeout(10_000) })
      assert.equal(conn.remotePeer.toString(), n.peerId)
      peerOf.set(n, conn.remotePeer)
    }
  })

  after(async () => {
    await js?.stop()
    for (const n of [...writers].reverse()) await n?.stop()
    await owner?.stop()
  })

  const nodes = () => [owner, ...writers]
  const label = (n) => `${n.name} (${n.peerId})`
  const network = () => owner.id.network

  test('tickets carry the owner\'s signed settings (replicas 2), a writer grant and the key the writer runs as', async () => {
    assert.equal(network(), owner.peerId, 'the owner\'s network id is its peer id')
    for (const [i, ticket] of tickets.entries()) {
      const t = decodeTicket(ticket)
      assert.equal(t.network, network())
      assert.ok(t.settings instanceof Uint8Array, `ticket ${i + 1} has settings (bytes): ${show(Object.keys(t))}`)
      const s = decodeSettings(t.settings)
      assert.equal(s.network, network())
      assert.equal(s.replicas, BigInt(R))
      assert.equal(s.issuerId.toString(), owner.peerId)
      const key = privateKeyFromProtobuf(t.key)
      assert.equal(peerIdFromPrivateKey(key).toString(), writers[i].peerId, 'the writer runs as the ticket\'s key')
      const g = decodeGrant(t.grant)
      assert.equal(g.subjectId.toString(), writers[i].peerId)
      assert.equal(g.issuerId.toString(), owner.peerId)
      assert.equal(g.role, 'writer')
    }
  })

  test('network answers carry the settings: signed by the owner, replicas 2 (the same on every member)', async (t) => {
    const answer = await request(js, peerOf.get(owner), FETCH, 'network')
    t.diagnostic(`owner's network answer: ${show(answer)}`)
    assert.equal(answer.network?.id, network())
    assert.ok(answer.network.settings instanceof Uint8Array, 'settings present (they set a number of copies)')
    const s = decodeSettings(answer.network.settings)
    assert.ok(verifySettings(s))
    assert.equal(s.network, network())
    assert.equal(s.replicas, BigInt(R))
    assert.equal(s.issuerId.toString(), owner.peerId)
    assert.ok(s.time > 0n && s.time <= BigInt(Date.now()), `time ${s.time} is when the owner made them`)
    assert.equal(hex(settingsSignedBytes(s)), hex(Buffer.concat([te.encode('dfs/settings/1\0'), encode({ network: s.network, replicas: Number(s.replicas), time: Number(s.time), issuer: s.issuer })])))
    assert.equal(hex(encodeSettings(s)), hex(answer.network.settings), 'canonical: re-encoded byte for byte')
    assert.equal(hex(answer.network.settings), hex(decodeTicket(tickets[0]).settings), 'the ticket\'s settings')
    for (const w of writers) {
      const a = await request(js, peerOf.get(w), FETCH, 'network')
      assert.equal(a.network?.id, network(), `${w.name}'s network`)
      assert.equal(hex(a.network.settings ?? []), hex(answer.network.settings), `${w.name} answers the same settings`)
    }
  })

  test('the owner announces itself on the peers topic with its capacity (default 1 TiB)', async (t) => {
    const sub = await createJsNode({ listen: false })
    try {
      const topic = peersTopic(network())
      sub.services.pubsub.subscribe(topic)
      const message = nextEvent(sub.services.pubsub, 'message', {
        filter: (evt) => evt.detail.topic === topic && evt.detail.from?.toString() === owner.peerId,
        timeout: 20_000, what: 'the owner\'s announcement on the peers topic'
      })
      await sub.dial(multiaddr(owner.addr), { signal: AbortSignal.timeout(10_000) })
      const msg = (await message).detail
      assert.ok(msg.data.length <= 4096)
      const a = decode(msg.data)
      t.diagnostic(`the owner's announcement: ${hex(msg.data)} = ${show(a)}`)
      assert.equal(peerIdFromString(owner.peerId).toMultihash().bytes.length, a.peer_id.length)
      assert.equal(hex(a.peer_id), hex(peerIdFromString(owner.peerId).toMultihash().bytes), 'peer_id = the signed from')
      publicKeyOf(a.peer_id)
      assert.ok(Array.isArray(a.addrs) && a.addrs.length >= 1 && a.addrs.length <= 16)
      assert.ok(a.addrs.some(b => multiaddr(b).toString() === owner.addr.replace(/\/p2p\/.*$/, '')), `addrs ${a.addrs.map(b => multiaddr(b).toString())} hold ${owner.addr}`)
      assert.ok(Math.abs(Number(a.time) - Date.now()) < 60_000)
      assert.equal(BigInt(a.capacity ?? DEFAULT_CAPACITY), DEFAULT_CAPACITY, `capacity ${a.capacity}: the default, 1 TiB`)
    } finally { await sub.stop() }
  })

  test('after puts, exactly the 2 members the js placement picks keep each file; the others do not hold it', async (t) => {
    // Every member knows every other as a writer (the candidates: all members with write access, up).
    const ids = nodes().map(n => n.peerId).sort()
    await waitFor(async () => {
      for (const n of nodes()) {
        const m = (await n.members()).filter(x => x.role === 'writer' || x.role === 'admin').map(x => x.peer_id).sort()
        if (m.join() !== ids.join()) return false
      }
      return true
    }, { timeout: 30_000, what: 'every node lists the owner and the three writers' })

    const candidates = nodes().map(n => ({ node: n, peer: peerIdFromString(n.peerId).toMultihash().bytes }))
    const files = [
      ['placement/one.bin', new Uint8Array(randomBytes(300 * 1024))],
      ['placement/two.bin', new Uint8Array(randomBytes(1536 * 1024))],
      ['placement/three.bin', new Uint8Array(randomBytes(10 * 1024))],
      ['placement/four.bin', new Uint8Array(randomBytes(700 * 1024))]
    ]
    const expected = []
    for (const [key, data] of files) {
      const cid = contentIdOf(data)
      const stat = await owner.put(key, data)
      assert.equal(stat.content_id, hex(cid), `${key}: the content id`)
      const placed = place(cid, candidates, R).map(c => c.node)
      t.diagnostic(`${key} ${hex(cid).slice(0, 16)}…: placed on ${placed.map(n => n.name).join(', ')}; ` +
        placementOrder(cid, candidates).map(c => `${c.node.name} h=${c.h.toString(16)} score=${c.score}`).join('; '))
      expected.push({ key, cid, placed })
    }

    const ask = async (n, cid) => {
      const res = await request(js, peerOf.get(n), FETCH, { has: { cid } }, { timeoutMs: 10_000 })
      if (res?.has == null) throw new Error(`${n.name}: unexpected answer ${show(res)}`)
      return res.has
    }
    const state = async () => {
      const out = []
      for (const { key, cid, placed } of expected) {
        for (const n of nodes()) {
          const has = await ask(n, cid)
          const want = placed.includes(n)
          const ok = want ? (has.complete === true && has.keeps === true) : (has.complete === false && (has.keeps ?? false) === false)
          out.push({ key, node: n.name, has, want, ok })
        }
      }
      return out
    }
    let last
    try {
      await waitFor(async () => { last = await state(); return last.every(x => x.ok) }, { timeout: 60_000, interval: 500, what: 'exactly the placed members to keep each file' })
    } catch (err) {
      err.message += '\n' + (last ?? []).filter(x => !x.ok).map(x => `${x.key} on ${x.node}: ${show(x.has)}, placed: ${x.want}`).join('\n')
      throw err
    }
    for (const x of last) t.diagnostic(`${x.key} on ${x.node}: ${show(x.has)}`)
    // And it stays so (no node drops a placed copy or fetches an unplaced one) for a few repair rounds.
    await new Promise(resolve => setTimeout(resolve, 3_000))
    const again = await state()
    assert.deepEqual(again.filter(x => !x.ok).map(x => `${x.key} on ${x.node}: ${show(x.has)}`), [])
    // Every member still serves each file's record (records reach every node); stat agrees on the content id.
    for (const { key, cid } of expected) {
      for (const n of writers) assert.equal((await n.stat(key)).content_id, hex(cid), `${n.name} has ${key}'s record`)
    }
  })
})

test('a network made with the default (every node holds every file): no settings in its network answer; a ticket\'s, if any, say all (0)', async (t) => {
  const owner = await DfsNode.start({ name: 'place-all' })
  const js = await createJsNode({ pubsub: false, listen: false })
  try {
    const conn = await js.dial(multiaddr(owner.addr), { signal: AbortSignal.timeout(10_000) })
    const answer = await request(js, conn.remotePeer, FETCH, 'network')
    assert.deepEqual(Object.keys(answer.network), ['id'], `no settings: ${show(answer)}`)
    assert.equal(hex(encode(answer)), hex(encode({ network: { id: owner.peerId } })), 'the wire form of a network without settings')
    const { ticket } = JSON.parse(await owner.cli('invite', '--json'))
    // The ticket's `settings` is optional with no stated condition: absent, or the owner's settings saying 0 (all).
    const settings = decodeTicket(ticket).settings
    if (settings != null) {
      const s = decodeSettings(settings)
      t.diagnostic(`the ticket carries settings: ${show(s)}`)
      assert.equal(s.replicas, 0n, 'all')
      assert.equal(s.issuerId.toString(), owner.peerId)
    }
  } finally {
    await js.stop()
    await owner.stop()
  }
})
