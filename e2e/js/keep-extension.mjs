// Run by TestJSClientKeepsExtension (../jsunit_test.go) in Node, against a
// scripted WebSocket: a client that has spoken the extension with a server
// keeps offering it when a reconnect's handshake fails (the network, a
// server refusing for a while), instead of falling back to 3.x, which
// would silently end recovery; a client that never had it still falls
// back at once (a 3.x server). Prints "ok" or throws.
//
//   node keep-extension.mjs path/to/clusterws.js

import { pathToFileURL } from 'node:url';

const conns = [];
class ScriptedWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  constructor(url, protocols) {
    Object.assign(this, { url, offered: [...protocols], protocol: '', readyState: 0, binaryType: 'blob', sent: [] });
    this.onopen = this.onmessage = this.onclose = null;
    conns.push(this);
  }
  send(data) { this.sent.push(data); }
  close() { this.readyState = 3; }
  accept(v2) { // the handshake succeeds; the server speaks v2 or 3.x
    Object.assign(this, { readyState: 1, protocol: v2 ? 'clusterws.v2' : '' });
    this.onopen?.({});
    const config = { ping: 0, binary: false, ...(v2 ? { protocol: 'clusterws.v2' } : {}) };
    this.onmessage?.({ data: JSON.stringify({ '#': ['s', 'c', config] }) });
  }
  fail() { // the handshake fails
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: '' });
  }
  drop() { // the server closes
    this.readyState = 3;
    this.onclose?.({ code: 1012, reason: 'restart' });
  }
}
globalThis.WebSocket = ScriptedWebSocket;
const { default: ClusterWS } = await import(pathToFileURL(process.argv[2]).href);

const deadline = Date.now() + 5000;
async function connection(n) {
  while (conns.length < n) {
    if (Date.now() > deadline) throw new Error(`connection ${n} not opened; offered: ${JSON.stringify(conns.map(c => c.offered))}`);
    await new Promise(r => setTimeout(r, 5));
  }
  return conns[n - 1];
}
function eq(got, want, what) {
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
const opts = { url: 'ws://test/ws', recover: true, autoReconnectOptions: { minInterval: 10, maxInterval: 20 } };

// Spoken once: kept across failed handshakes.
let c = new ClusterWS(opts);
(await connection(1)).accept(true);
conns[0].drop();
(await connection(2)).fail();
(await connection(3)).fail();
(await connection(4)).accept(true);
eq(conns.slice(0, 4).map(x => x.offered), [['clusterws.v2'], ['clusterws.v2'], ['clusterws.v2'], ['clusterws.v2']],
  'the subprotocols offered after the extension was spoken');
c.disconnect();

// Never spoken: a failed handshake is tried again at once without (a 3.x
// server fails browsers' handshakes that offer a subprotocol).
conns.length = 0;
c = new ClusterWS(opts);
(await connection(1)).fail();
(await connection(2)).accept(false);
eq(conns.map(x => x.offered), [['clusterws.v2'], []], 'the subprotocols offered to a 3.x server');
c.disconnect();
console.log('ok');
process.exit(0);
