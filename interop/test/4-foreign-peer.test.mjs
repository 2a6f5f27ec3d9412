// 5. A libp2p peer that speaks none of the dfs protocols (identify and ping only, no gossipsub)
// "simply stays connected" (docs/PROTOCOL.md, "Participants and goals"): no disconnect, and no
// WARN or ERROR in the dfs node's log at its default level.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { DfsNode, waitFor } from '../lib/dfs.mjs'
import { createJsNode, identified } from '../lib/jsnode.mjs'

const HOLD_MS = Number(process.env.INTEROP_HOLD_MS ?? 12_000)
const cleanup = []
after(async () => { for (const fn of cleanup.reverse()) await fn() })

test(`a peer without the dfs protocols stays connected for ${HOLD_MS / 1000} s, quietly`, async () => {
  const dfs = await DfsNode.start({ name: 'foreign' })
  cleanup.push(() => dfs.stop())
  const js = await createJsNode({ pubsub: false, listen: false })
  cleanup.push(() => js.stop())
  const closes = []
  js.addEventListener('connection:close', (evt) => closes.push(evt.detail))
  const jsErrors = []
  js.addEventListener('peer:disconnect', (evt) => jsErrors.push(`peer:disconnect ${evt.detail}`))

  const identify = identified(js, dfs.peerId)
  const conn = await js.dial(multiaddr(dfs.addr), { signal: AbortSignal.timeout(10_000) })
  await identify
  await waitFor(async () => (await dfs.peers()).some(p => p.peer_id === js.peerId.toString() && p.agent != null),
    { what: 'the foreign peer, identified, in `dfs peers`' })

  // Hold the connection (this is the point of the test: a bounded, deliberate wait).
  await new Promise(resolve => setTimeout(resolve, HOLD_MS))

  assert.deepEqual(closes.map(c => `${c.remotePeer} ${c.status}`), [], 'the js side saw no connection close')
  assert.deepEqual(jsErrors, [])
  assert.equal(conn.status, 'open')
  assert.ok(await js.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(10_000) }) >= 0, 'still answers ping')
  assert.ok((await dfs.peers()).some(p => p.peer_id === js.peerId.toString()), 'dfs still lists the peer')
  assert.deepEqual(dfs.warnings(), [], 'no WARN or ERROR in the dfs node log')
})
