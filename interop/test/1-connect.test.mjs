// 1. Connectivity both ways: ping and identify ("Transport" in docs/PROTOCOL.md).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { DfsNode, dfsVersion, waitFor } from '../lib/dfs.mjs'
import { createJsNode, identified, JS_AGENT } from '../lib/jsnode.mjs'
import { FETCH, CHUNKS, SYNC, SYNC_LIMIT, request, show } from '../lib/proto.mjs'

let version
const cleanup = []

before(async () => { version = await dfsVersion() })
after(async () => { for (const fn of cleanup.reverse()) await fn() })

function checkIdentify (result, dfsPeerId) {
  assert.equal(result.peerId.toString(), dfsPeerId)
  assert.equal(result.agentVersion, `dfs/${version}`)
  assert.equal(result.protocolVersion, '/dfs/1.0.0')
  for (const p of [FETCH, CHUNKS, SYNC, '/ipfs/id/1.0.0', '/ipfs/ping/1.0.0']) {
    assert.ok(result.protocols.includes(p), `identify lists ${p}: ${result.protocols}`)
  }
  assert.ok(!result.protocols.includes('/dfs/fetch/1'), `identify no longer lists /dfs/fetch/1: ${result.protocols}`)
  assert.ok(result.protocols.some(p => p === '/meshsub/1.1.0' || p === '/meshsub/1.2.0'), 'gossipsub v1.1+')
}

test('a js-libp2p node dials a dfs node: ping and identify', async () => {
  const dfs = await DfsNode.start({ name: 'dialed' })
  cleanup.push(() => dfs.stop())
  // A fresh node without --bootstrap/--join owns a new network: its id is the node's peer id.
  assert.equal(dfs.id.network, dfs.peerId, `dfs id --json: ${JSON.stringify(dfs.id)}`)
  assert.equal(dfs.id.role, 'admin')
  assert.deepEqual(await dfs.members(), [{ peer_id: dfs.peerId, role: 'admin', owner: true }])
  const js = await createJsNode({ listen: false })
  cleanup.push(() => js.stop())

  const identify = identified(js, dfs.peerId)
  const conn = await js.dial(multiaddr(dfs.addr), { signal: AbortSignal.timeout(10_000) })
  assert.equal(conn.remotePeer.toString(), dfs.peerId)
  const rtt = await js.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(10_000) })
  assert.ok(rtt >= 0)
  checkIdentify(await identify, dfs.peerId)

  // ... and the dfs node identified the js peer.
  const peer = await waitFor(async () => (await dfs.peers()).find(p => p.peer_id === js.peerId.toString() && p.agent != null),
    { what: 'the js peer with its agent in `dfs peers`' })
  assert.equal(peer.agent, JS_AGENT)
})

test('a dfs node dials a js-libp2p node through --bootstrap: ping and identify', async (t) => {
  const js = await createJsNode({ listen: true })
  cleanup.push(() => js.stop())
  const jsAddr = js.getMultiaddrs().find(a => a.toString().startsWith('/ip4/127.0.0.1/tcp/'))
  assert.ok(jsAddr, 'js listens on 127.0.0.1')

  let identify
  js.addEventListener('connection:open', (evt) => { identify ??= identified(js, evt.detail.remotePeer) })
  const dfs = await DfsNode.start({ name: 'dialer', bootstrap: [jsAddr.toString()] })
  cleanup.push(() => dfs.stop())

  // The dfs node opened the connection.
  const conn = await waitFor(() => js.getConnections().find(c => c.remotePeer.toString() === dfs.peerId),
    { what: 'the connection from the dfs node' })
  assert.equal(conn.direction, 'inbound')

  // The dfs node pings us (an inbound ping stream) and we can ping it over its connection.
  await waitFor(() => conn.streams.some(s => s.protocol === '/ipfs/ping/1.0.0' && s.direction === 'inbound'),
    { what: 'an inbound ping stream from the dfs node' })
  assert.ok(await js.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(10_000) }) >= 0)
  checkIdentify(await identify, dfs.peerId)

  // `dfs peers --json` shows the js peer with its identify agent and its listen address.
  const peer = await waitFor(async () => (await dfs.peers()).find(p => p.peer_id === js.peerId.toString() && p.agent != null),
    { what: 'the js peer with its agent in `dfs peers`' })
  assert.equal(peer.agent, JS_AGENT)
  assert.ok(peer.addrs.some(a => a.startsWith(jsAddr.toString().split('/p2p/')[0])), `addrs ${peer.addrs} contain ${jsAddr}`)
  // --bootstrap alone joins the bootstrap peer's network as a reader; this js peer speaks no
  // /dfs/fetch/2, so the node cannot learn a network id from it: it does not own one either.
  const id = await dfs.idNow()
  t.diagnostic(`dfs id --json of a node bootstrapped to a plain libp2p peer: ${JSON.stringify(id)}`)
  assert.notEqual(id.network, dfs.peerId, 'a node started with --bootstrap does not create its own network')
  assert.notEqual(id.role, 'admin')
  // While it does not know its network: `"network"` is answered `not_found`, and the sync root
  // carries no `grants` digest.
  assert.equal(await request(js, conn.remotePeer, FETCH, 'network'), 'not_found')
  const root = await request(js, conn.remotePeer, SYNC, 'root', { limit: SYNC_LIMIT })
  assert.deepEqual(Object.keys(root.root ?? {}).sort(), ['count', 'root'], `root answer without grants: ${show(root)}`)
})
