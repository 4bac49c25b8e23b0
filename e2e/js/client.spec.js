'use strict';
// Runs the scenarios of the browser client's test in headless Chromium with
// playwright-core, for the Go test TestJSClient in ../client_test.go: each
// in a fresh page of client.html (the Go server serves it and the client),
// where window.t holds the helpers.
//
//   node client.spec.js '{"url":"http://127.0.0.1:PORT/","scenarios":["events",…],
//                         "chromium":"/usr/bin/chromium","userDataDir":"/tmp/…",
//                         "waitMs":15000,"deadlineMs":110000}'
//
// stdout: one JSON event a line:
//   {"ev":"launched","version":"…"}              Chromium is up
//   {"ev":"result","name":"…","error":"…"}       a scenario passed (error "") or failed
//   {"ev":"pageerror"|"console",…}               diagnostics from the pages
//   {"ev":"pass"} or {"ev":"fail","error":"…"}   the run, then the process exits 0 or 1

const { cfg, emit, launch } = require('./browser');

const WAIT = cfg.waitMs || 15000; // one observation in a page
const SCENARIO = cfg.scenarioMs || 30000; // one scenario, which may await a promise that never settles

// The scenarios, run in the page: each gets window.t and throws on failure.
// They are serialised into the page, so they use nothing from this file.
const scenarios = {
  // Events both ways, the client's own events, disconnect().
  events: async t => {
    const { c, log, ids } = t.open();
    const echoes = [], later = [];
    c.on('echo', d => echoes.push(d));
    c.on('later', d => later.push(d));
    await t.until(() => c.connectionState === 'connected', 'the connection');
    t.eq([c.getState(), t.sockets[0].protocol], [1, 'clusterws.v2'], 'readyState and subprotocol');
    await t.until(() => ids.length === 1, "the server's hello event");
    const values = [null, 0, -1.5, true, 'x', 'é ✓ 😀 "q" \\ \n', [1, [2, {}]], { a: { b: 'c' } }];
    for (const v of values) c.send('echo', v);
    await t.until(() => echoes.length === values.length, 'every echo');
    t.eq(echoes, values, 'the echoes');
    // A server event named like one of the client's own is not delivered.
    c.send('emit', { event: 'state', data: 'not a state' });
    c.send('emit', { event: 'later', data: 1 });
    await t.until(() => later.length === 1, 'the event sent after');
    t.eq(log, [['state', 'connecting'], ['state', 'connected'], ['connect']], 'the client events');
    t.eq(t.sockets[0].sent.filter(k => k !== 'text'), [], 'frames sent other than text');
    // disconnect() stops the client; the server gets its code and reason.
    c.disconnect(4000, 'bye');
    t.eq([c.connectionState, c.getState()], ['disconnected', 3], 'connectionState and getState() after disconnect()');
    t.eq(log.slice(3), [['state', 'disconnected'], ['disconnect', 4000, 'bye']], 'the events of disconnect()');
    t.eq(await t.closed(ids[0]), { code: 4000, reason: 'bye' }, 'the close the server saw');
    t.eq(t.sockets.length, 1, 'connections opened');
  },

  // Calls made before the connection wait for it, in order.
  'before-connect': async t => {
    const { c, log } = t.open('/ws', { autoConnect: false });
    t.eq(c.connectionState, 'disconnected', 'the state before connect()');
    const got = [], echoes = [];
    c.on('echo', d => echoes.push(d));
    const ch = c.subscribe('early').watch(d => got.push(d));
    ch.ready.then(() => log.push(['ready']));
    const published = ch.publish('first');
    published.then(() => log.push(['published']));
    c.send('echo', 'queued');
    await new Promise(resolve => setTimeout(resolve, 0));
    t.eq([ch.state, t.sockets.length], ['subscribing', 0], 'the channel and connections before connect()');
    c.connect();
    t.eq(c.connectionState, 'connecting', 'the state after connect()');
    await published;
    await t.until(() => got.length === 1 && echoes.length === 1, 'the queued publish and event');
    t.eq([got, echoes, ch.state], [['first'], ['queued'], 'subscribed'], 'publish, event and channel');
    t.eq(log.map(e => e[0]).filter(n => n !== 'state'), ['connect', 'ready', 'published'], 'the order of connect, ready and publish');
  },

  // Refusals: ready and publish reject with the server's code and reason.
  refused: async t => {
    const { c, log } = t.open();
    const priv = c.subscribe('private-x');
    const e = await t.rejects(priv.ready, 403, 'members only', 'ready of private-x');
    t.eq([e instanceof Error, e.name, e.channel, e.message], [true, 'ClusterWSError', 'private-x', 'private-x: 403 members only'], 'the error');
    t.eq([priv.state, c.getChannelByName('private-x')], ['refused', undefined], 'the refused channel');
    c.subscribe('private-ignored'); // nobody looks at its ready: no unhandled rejection, no error event
    const news = c.subscribe('news');
    const got = [];
    news.watch(d => got.push(d));
    t.eq(await news.ready === news, true, 'ready resolves to the channel');
    await t.rejects(news.publish('spam'), 403, 'no spam', 'publish of spam');
    await news.publish('ham');
    await t.until(() => got.length === 1, 'the publish');
    t.eq(got, ['ham'], 'what news got'); // spam, published first, never came
    const notSubscribed = 'publish to a channel the socket is not subscribed to';
    await t.rejects(priv.publish('x'), 409, notSubscribed, 'publish to the refused channel');
    await news.unsubscribe();
    t.eq(news.state, 'unsubscribed', 'the state after unsubscribe()');
    await t.rejects(news.publish('late'), 409, notSubscribed, 'publish after unsubscribe()');
    const again = c.subscribe('news');
    t.eq(again !== news, true, 'subscribe after unsubscribe() gives a new channel');
    await again.ready;
    // Data JSON cannot encode: send throws, publish rejects, with its TypeError.
    let thrown = null, rejected = null;
    try { c.send('echo', 1n); } catch (err) { thrown = err; }
    await again.publish(1n).catch(err => { rejected = err; });
    t.eq([thrown instanceof TypeError, rejected instanceof TypeError], [true, true], 'BigInt sent and published');
    t.eq(log.filter(e => e[0] === 'error'), [], 'error events');
  },

  // The server's limits: name length (32 here) and subscriptions (4).
  limits: async t => {
    const { c } = t.open();
    await t.rejects(c.subscribe('x'.repeat(33)).ready, 414, 'channel name too long', 'a 33-byte name');
    await c.subscribe('y'.repeat(32)).ready;
    const chans = ['a', 'b', 'c'].map(n => c.subscribe(n));
    await Promise.all(chans.map(ch => ch.ready));
    await t.rejects(c.subscribe('d').ready, 429, 'too many subscriptions', 'a fifth channel');
    await chans[0].unsubscribe();
    await c.subscribe('d').ready;
  },

  // The server closes every socket (1012): the client reconnects and
  // subscribes again; what was in flight, queued or refused meanwhile is
  // accounted for.
  reconnect: async t => {
    const { c, log, ids, hooks } = t.open('/ws', { autoReconnectOptions: { minInterval: 100, maxInterval: 400 } });
    const room = c.subscribe('room:r');
    const got = [];
    room.watch(d => got.push(d));
    const vip = c.subscribe('vip');
    await Promise.all([room.ready, vip.ready]);
    const firstReady = room.ready;
    await t.ctl('POST', 'ban', { channel: 'vip' });
    // A publish the server holds when the connection ends is rejected: it
    // may or may not have been delivered.
    const held = t.rejects(room.publish('hold'), t.Codes.CONNECTION_LOST, 'connection lost', 'the publish in flight');
    await t.until(async () => (await t.ctl('GET', 'holding')).holding === 1, 'the server to hold the publish');
    // One made while the client reconnects waits for the next connection.
    let queued = null;
    hooks.disconnect = () => { queued = room.publish('while away'); };
    const { closed } = await t.ctl('POST', 'close', { code: 1012, reason: 'restart' });
    t.eq(closed >= 1, true, 'sockets the server closed');
    await held;
    await t.until(() => c.connectionState === 'connected' && room.state === 'subscribed', 'the reconnect and resubscribe');
    await queued;
    t.eq(room.ready !== firstReady && (await room.ready) === room, true, 'a new ready, resolved, after the reconnect');
    // vip, refused now, is dropped and reported by an error event.
    await t.until(() => log.some(e => e[0] === 'error'), 'the error about vip');
    const err = log.find(e => e[0] === 'error')[1];
    t.eq([err instanceof t.ClusterWSError, err.code, err.reason, err.channel], [true, 403, 'banned', 'vip'], 'the error');
    t.eq([vip.state, c.getChannelByName('vip')], ['refused', undefined], 'vip after the reconnect');
    await t.ctl('POST', 'publish', { channel: 'room:r' }, { after: 'reconnect' });
    await t.until(() => got.length === 2, 'the publishes after the reconnect');
    t.eq(got, ['while away', { after: 'reconnect' }], 'what room:r got');
    t.eq(log.filter(e => e[0] !== 'error'), [
      ['state', 'connecting'], ['state', 'connected'], ['connect'],
      ['state', 'reconnecting'], ['disconnect', 1012, 'restart'], ['state', 'connected'], ['connect'],
    ], 'the client events');
    t.eq(ids.length === 2 && ids[0] !== ids[1], true, `two connections: ${ids}`);
    t.eq(await t.closed(ids[0]), { code: 1012, reason: 'restart' }, 'the close the server saw');
  },

  // autoResubscribe: false drops the channels with the connection,
  // autoReconnect: false stops with it, and so does a 1000 close from the
  // server in any case.
  options: async t => {
    const a = t.open('/ws', { autoResubscribe: false, autoReconnectOptions: { minInterval: 100, maxInterval: 200 } });
    const b = t.open('/ws', { autoReconnect: false });
    const x = a.c.subscribe('x'), y = b.c.subscribe('y');
    await Promise.all([x.ready, y.ready]);
    await t.ctl('POST', 'close', { code: 1012, reason: 'restart' });
    await t.until(() => a.ids.length === 2 && b.c.connectionState === 'disconnected', 'a to reconnect, b to stop');
    t.eq([x.state, a.c.getChannelByName('x'), y.state, b.c.getChannelByName('y')], ['unsubscribed', null, 'unsubscribed', null], 'the channels');
    t.eq(b.log.slice(3), [['state', 'disconnected'], ['disconnect', 1012, 'restart']], "b's events after the close");
    await t.ctl('POST', 'close', { code: 1000, reason: 'bye' });
    await t.until(() => a.c.connectionState === 'disconnected', 'a to stop after a 1000 close');
    t.eq(a.log.slice(-2), [['state', 'disconnected'], ['disconnect', 1000, 'bye']], "a's last events");
    t.eq(a.ids.length, 2, "a's connections");
  },

  // Binary mode: JSON goes both ways in binary frames, unicode intact.
  binary: async t => {
    const { c } = t.open('/bin');
    const echoes = [], got = [];
    c.on('echo', d => echoes.push(d));
    const ch = c.subscribe('b').watch(d => got.push(d));
    await ch.ready;
    const v = { text: 'é ü ñ ✓ 😀 中文', n: [1, 2.5] };
    c.send('echo', v);
    await ch.publish(v);
    await t.until(() => echoes.length === 1 && got.length === 1, 'the echo and the publish');
    t.eq([echoes[0], got[0]], [v, v], 'the echo and the publish');
    const ws = t.sockets[0];
    t.eq([ws.sent.length >= 3, ws.sent.filter(k => k !== 'binary')], [true, []], `the frames sent (${ws.sent})`);
    t.eq([ws.received.length >= 5, ws.received.filter(k => k !== 'binary')], [true, []], `the frames received (${ws.received})`);
  },

  // A server that does not select clusterws.v2 (as a 3.x server): the
  // browser fails the handshake, the client tries again without, then
  // speaks 3.x, with promises that settle once sent.
  fallback: async t => {
    const { c, log } = t.open('/old');
    const got = [];
    const ch = c.subscribe('news').watch(d => got.push(d));
    const priv = c.subscribe('private-y');
    await t.until(() => c.connectionState === 'connected', 'the connection');
    t.eq(t.sockets.map(ws => [ws.offered, ws.protocol]), [[['clusterws.v2'], ''], [[], '']], 'subprotocols offered and selected');
    t.eq(log, [['state', 'connecting'], ['state', 'connected'], ['connect']], 'the client events');
    // Settled when sent, the refused one too: the 3.x protocol does not say.
    t.eq([ch.state, priv.state], ['subscribed', 'subscribed'], 'the channels once connected');
    await Promise.all([ch.ready, priv.ready]);
    await ch.publish('plain');
    await t.until(() => got.length === 1, 'the publish');
    t.eq(got, ['plain'], 'what news got');
    await ch.unsubscribe();
  },

  // Heartbeats: pings answered; a connection without pings dropped with
  // 4001 after 2×ping+100 ms, and replaced.
  heartbeat: async t => {
    const { c, log, ids, at } = t.open('/hb', { autoReconnectOptions: { minInterval: 100, maxInterval: 200 } });
    await t.until(() => c.connectionState === 'connected', 'the connection');
    // The server (a ping every 2 s) closes a socket that has not answered
    // a ping by the next: two more pings and still connected prove the
    // pongs.
    const first = t.pings();
    await t.until(() => t.pings() >= first + 2, 'two pings');
    t.eq(log.filter(e => e[0] === 'disconnect'), [], 'disconnects while pinged');
    // Pings hidden from the client (the page answers them, so the server
    // keeps the socket): the client drops the connection.
    t.hidePings(true);
    await t.until(() => log.some(e => e[0] === 'disconnect'), 'the watchdog');
    t.hidePings(false);
    const quiet = at.disconnect - t.lastPing();
    t.eq(log.find(e => e[0] === 'disconnect'), ['disconnect', 4001, 'did not get pings'], 'the disconnect');
    t.eq(quiet >= 4100 - 5, true, `dropped ${quiet} ms after the last ping the client saw, before 2×ping+100`);
    t.eq(await t.closed(ids[0]), { code: 4001, reason: 'did not get pings' }, 'the close the server saw');
    await t.until(() => c.connectionState === 'connected' && ids.length === 2, 'the reconnect');
  },

  // Reconnect attempts run out: the client stops and what waits rejects.
  'give-up': async t => {
    const { c, log } = t.open('/nope', { autoReconnectOptions: { attempts: 2, minInterval: 50, maxInterval: 100 } });
    const ch = c.subscribe('x');
    const published = ch.publish(1);
    c.send('echo', 'never');
    await t.rejects(published, t.Codes.STOPPED, 'client stopped', 'the queued publish');
    await t.rejects(ch.ready, t.Codes.STOPPED, 'client stopped', 'the waiting subscription');
    t.eq(log, [['state', 'connecting'], ['state', 'reconnecting'], ['state', 'disconnected']], 'the client events');
    t.eq([c.connectionState, c.getState(), c.getChannelByName('x')], ['disconnected', 3, undefined], 'the client after');
    // The first and two more, each offering clusterws.v2, then nothing.
    t.eq(await t.ctl('GET', 'hits'), { hits: 6 }, 'handshakes');
  },
};

// run runs one scenario in a new page and returns its error, "" if none.
async function run(ctx, name) {
  const fn = scenarios[name];
  if (!fn) return `client.spec.js has no scenario ${name}`;
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e && e.stack || e)));
  page.on('console', m => {
    if (m.type() === 'error' || m.type() === 'warning') emit({ ev: 'console', page: name, text: m.text() });
  });
  try {
    await page.goto(`${cfg.url}?wait=${WAIT}`, { timeout: WAIT });
    await page.waitForFunction(() => window.t, null, { timeout: WAIT });
    let timer;
    await Promise.race([
      page.evaluate(`(${fn})(window.t)`),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`not done within ${SCENARIO} ms`)), SCENARIO); }),
    ]).finally(() => clearTimeout(timer));
    const unhandled = await page.evaluate(() => window.t.unhandled);
    if (unhandled.length > 0) throw new Error(`unhandled rejections: ${unhandled.join('; ')}`);
    if (errors.length > 0) throw new Error(`uncaught errors: ${errors.join('; ')}`);
    return '';
  } catch (e) {
    return String(e && e.message || e);
  } finally {
    await page.close().catch(() => {});
  }
}

async function main() {
  const ctx = await launch();
  for (const name of cfg.scenarios || Object.keys(scenarios)) {
    emit({ ev: 'result', name, error: await run(ctx, name) });
  }
  await ctx.close().catch(e => emit({ ev: 'console', page: '', text: `closing the browser: ${e.message}` }));
  emit({ ev: 'pass' });
  process.exit(0);
}

main().catch(e => {
  emit({ ev: 'fail', error: String(e && e.stack || e) });
  process.exit(1);
});
