// A minimal raw gossipsub (/meshsub/1.1.0) client, independent of @libp2p/gossipsub, used to
// check the dfs node's message ids from the outside: a peer that asks (IWANT) for the id
// BLAKE3(data) gets the message only if the dfs node computes ids that way.
//
// Wire format (libp2p pubsub spec): each RPC is a protobuf, prefixed by its length as an
// unsigned varint. RPC { repeated SubOpts subscriptions = 1; repeated Message publish = 2;
// ControlMessage control = 3 } SubOpts { bool subscribe = 1; string topicid = 2 }
// Message { bytes from = 1; bytes data = 2; bytes seqno = 3; string topic = 4; bytes signature = 5; bytes key = 6 }
// ControlMessage { ihave = 1; repeated ControlIWant iwant = 2; ... } ControlIWant { repeated bytes messageIDs = 1 }

export const MESHSUB = '/meshsub/1.1.0'

function varint (n) {
  const out = []
  while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128) }
  out.push(n)
  return out
}

function field (num, bytes) { // wire type 2 (length-delimited)
  return [...varint((num << 3) | 2), ...varint(bytes.length), ...bytes]
}

const utf8 = (s) => [...new TextEncoder().encode(s)]

export function encodeRpc ({ subscribe = [], iwant = [] }) {
  const body = []
  for (const topic of subscribe) body.push(...field(1, [...varint((1 << 3) | 0), 1, ...field(2, utf8(topic))]))
  if (iwant.length > 0) body.push(...field(3, field(2, iwant.flatMap(id => field(1, [...id])))))
  return new Uint8Array([...varint(body.length), ...body])
}

function readVarint (buf, pos) {
  let n = 0; let mul = 1
  while (true) {
    if (pos >= buf.length) return null
    const b = buf[pos++]
    n += (b & 0x7f) * mul
    if (b < 0x80) return [n, pos]
    mul *= 128
  }
}

/** Fields of one protobuf message: [{ num, value }] (value: Uint8Array or number). */
function fields (buf) {
  const out = []
  let pos = 0
  while (pos < buf.length) {
    const [tag, p1] = readVarint(buf, pos)
    const num = tag >> 3; const type = tag & 7
    if (type === 0) { const [v, p2] = readVarint(buf, p1); out.push({ num, value: v }); pos = p2 } else if (type === 2) {
      const [len, p2] = readVarint(buf, p1)
      out.push({ num, value: buf.subarray(p2, p2 + len) }); pos = p2 + len
    } else if (type === 1) { pos = p1 + 8 } else if (type === 5) { pos = p1 + 4 } else throw new Error(`protobuf wire type ${type}`)
  }
  return out
}

/** The published messages of one RPC: [{ from, data, seqno, topic }] */
export function decodePublished (rpc) {
  return fields(rpc).filter(f => f.num === 2).map(f => {
    const m = {}
    for (const g of fields(f.value)) {
      if (g.num === 1) m.from = g.value
      if (g.num === 2) m.data = g.value
      if (g.num === 3) m.seqno = g.value
      if (g.num === 4) m.topic = new TextDecoder().decode(g.value)
    }
    return m
  })
}

/** Splits a growing byte buffer into length-prefixed frames; returns [frames, rest]. */
export function splitFrames (buf) {
  const frames = []
  let pos = 0
  while (true) {
    const r = readVarint(buf, pos)
    if (r == null || r[1] + r[0] > buf.length) break
    frames.push(buf.subarray(r[1], r[1] + r[0]))
    pos = r[1] + r[0]
  }
  return [frames, buf.subarray(pos)]
}
