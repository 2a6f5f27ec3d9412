// A js-libp2p 3.x node configured per docs/PROTOCOL.md "Transport" and "Gossipsub".
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { msgIdFn, hex } from './proto.mjs'

export const JS_AGENT = 'dfs-interop-js/0.0.0'

/**
 * @param {object} opts
 * @param {boolean} [opts.pubsub] add gossipsub (StrictSign, message id = BLAKE3(data))
 * @param {boolean} [opts.listen] listen on 127.0.0.1 (for a dfs node to dial us)
 */
export async function createJsNode ({ pubsub = true, listen = true, privateKey } = {}) {
  const services = { identify: identify(), ping: ping() }
  if (pubsub) {
    services.pubsub = gossipsub({
      globalSignaturePolicy: 'StrictSign',
      msgIdFn,
      msgIdToStrFn: hex,
      emitSelf: false,
      allowPublishToZeroTopicPeers: false,
      // The dfs records topic is quiet: do not let the default (mesh delivery) scoring or
      // IWANT follow-ups interfere; dfs documents the same choice.
      gossipsubIWantFollowupMs: 3_000
    })
  }
  return createLibp2p({
    privateKey,
    addresses: { listen: listen ? ['/ip4/127.0.0.1/tcp/0'] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    nodeInfo: { userAgent: JS_AGENT },
    services
  })
}

/**
 * Resolves with the IdentifyResult of js-libp2p's automatic identify of `peerId` (register before
 * dialing; calling identify() by hand would race the automatic one for the single identify stream).
 */
export function identified (js, peerId, { timeout = 20_000 } = {}) {
  return new Promise((resolve, reject) => {
    const onIdentify = (evt) => {
      if (evt.detail.peerId.toString() !== peerId.toString()) return
      clearTimeout(timer)
      js.removeEventListener('peer:identify', onIdentify)
      resolve(evt.detail)
    }
    const timer = setTimeout(() => {
      js.removeEventListener('peer:identify', onIdentify)
      reject(new Error(`timed out after ${timeout} ms waiting for identify of ${peerId}`))
    }, timeout)
    js.addEventListener('peer:identify', onIdentify)
  })
}
