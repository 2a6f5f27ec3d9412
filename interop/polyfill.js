// Node 20 lacks Promise.withResolvers, which some libp2p 3.x packages call.
// Loaded with `node --import ./polyfill.js` before anything else.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
