'use strict';
// Multi-host scenario for ../multihost_test.go: one published ClusterWS
// client on host A publishes to a room, several clients on host B (spread
// over its workers) receive. Prints one JSON line with what each saw.
//
//   node multihost.js ws://HOST_A/ws ws://HOST_B/ws COUNT_B MESSAGES
global.window = { WebSocket: require('ws') };
const ClusterWS = require('clusterws-client-js');

const [urlA, urlB, countB, messages] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
const room = 'room:lobby';
const fail = (msg) => { console.log(JSON.stringify({ error: msg })); process.exit(1); };
setTimeout(() => fail('timed out'), 60000);

// connect resolves once the client is subscribed on its host: its own
// hello, published to the room after subscribing, comes back through it.
// The example admits a client by ?name= and lets it publish under that name.
function connect(url, name) {
  return new Promise((resolve) => {
    const c = new ClusterWS({ url: `${url}?name=${name}` });
    const me = { name, c, worker: null, got: [], joined: false };
    c.on('error', (e) => fail(`${name}: ${e && e.message}`));
    c.on('welcome', (w) => {
      me.worker = w.worker;
      const ch = c.subscribe(room).watch((m) => {
        if (m.type === 'hello' && m.name === name && !me.joined) { me.joined = true; resolve(me); }
        if (m.type === 'msg') me.got.push(m.text);
      });
      ch.publish({ type: 'hello', name });
    });
  });
}

(async () => {
  const bs = [];
  for (let i = 0; i < countB; i++) bs.push(await connect(urlB, `b${i}`));
  const a = await connect(urlA, 'a');
  const ch = a.c.getChannelByName(room);
  for (let i = 0; i < messages; i++) ch.publish({ type: 'msg', name: 'a', text: String(i) });
  const deadline = Date.now() + 30000;
  const done = () => bs.every((b) => b.got.length >= messages) && a.got.length >= messages;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  // A little longer, to catch duplicates arriving late.
  await new Promise((r) => setTimeout(r, 300));
  console.log(JSON.stringify({
    a: { worker: a.worker, got: a.got },
    b: bs.map((b) => ({ worker: b.worker, got: b.got })),
  }));
  process.exit(0);
})();
