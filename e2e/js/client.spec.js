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

  // A server that echoes the subprotocol offered but does not speak the
  // extension (no "protocol" in its config frame): one connection, spoken
  // in 3.x, with recover doing nothing.
  marker: async t => {
    const { c, log } = t.open('/echo', { recover: true });
    const got = [];
    const ch = c.subscribe('news').watch(d => got.push(d));
    const priv = c.subscribe('private-z');
    await t.until(() => c.connectionState === 'connected', 'the connection');
    t.eq(t.sockets.map(ws => [ws.offered, ws.protocol]), [[['clusterws.v2'], 'clusterws.v2']], 'subprotocols offered and selected');
    t.eq(JSON.parse(t.sockets[0].receivedText[0]), { '#': ['s', 'c', { ping: 20000, binary: false }] }, 'the config frame');
    t.eq([ch.state, priv.state], ['subscribed', 'subscribed'], 'the channels once connected');
    await Promise.all([ch.ready, priv.ready]);
    await ch.publish('plain');
    await t.until(() => got.length === 1, 'the publish');
    t.eq(got, ['plain'], 'what news got');
    t.eq(t.sockets[0].sentText, ['{"#":["s","s","news"]}', '{"#":["s","s","private-z"]}', '{"#":["p","news","plain"]}'], 'the frames sent: 3.x');
    t.eq(log, [['state', 'connecting'], ['state', 'connected'], ['connect']], 'the client events');
  },

  // Recovery: 1,000 publications while the page is away, then 200 more
  // as it comes back (racing its resubscribe): after the automatic
  // reconnect the watcher has every one, in order, once.
  recover: async t => {
    const { c, log, ids } = t.open('/hist', { recover: true, autoReconnectOptions: { minInterval: 2000, maxInterval: 2000 } });
    const got = [];
    const a = c.subscribe('hist:a').watch(d => got.push(d.n));
    const quiet = c.subscribe('hist:quiet'); // nothing published on it: nothing missed, no gap
    await Promise.all([a.ready, quiet.ready]);
    t.eq([a.position.offset, typeof a.position.epoch, a.position.epoch.length > 0], [0, 'string', true], 'the position of a new channel');
    t.eq(Object.isFrozen(a.position), true, 'the position is read-only');
    await t.ctl('POST', 'numbered', { channel: 'hist:a', n: 5 });
    await t.until(() => got.length === 5, 'the first 5');
    const before = a.position;
    t.eq(before, { offset: 5, epoch: before.epoch }, 'the position after 5');
    const firstReady = a.ready;
    const { last } = await t.ctl('POST', 'away', { channel: 'hist:a', n: 1000, then: 200 });
    t.eq(last, { 'hist:a': 1005 }, 'published while away');
    await t.until(() => got.length >= 1205, 'the 1,200 publications after the reconnect');
    t.eq(a.ready !== firstReady && (await a.ready) === a, true, 'a new ready, resolved');
    // One more, live: nothing missed or repeated came late.
    await t.ctl('POST', 'numbered', { channel: 'hist:a', n: 1 });
    await t.until(() => got.length >= 1206, 'the live one');
    t.seq(got, 1, 1206, 'what hist:a got');
    t.eq(a.position, { offset: 1206, epoch: before.epoch }, 'the position at the end');
    t.eq(quiet.position, { offset: 0, epoch: quiet.position.epoch }, 'the position of the quiet channel');
    // The resubscribe asked for what came after offset 5, of that epoch.
    const since = t.sockets[1].sentText.filter(f => f.includes('"since"')).map(f => JSON.parse(f)['#'][2]);
    t.eq(since.map(r => [r.channel, r.since]), [['hist:a', before]], 'the subscribes with since');
    t.eq(log, [
      ['state', 'connecting'], ['state', 'connected'], ['connect'],
      ['state', 'reconnecting'], ['disconnect', 1012, 'away'], ['state', 'connected'], ['connect'],
    ], 'the client events (no gap)');
    t.eq(ids.length, 2, 'connections');
  },

  // Gaps: a channel whose missed publications are no longer all kept
  // (window exceeded), one that had no position to ask from (offset 0),
  // then every channel after the server lost its history (a new epoch):
  // each is reported by a 'gap' event before what follows it, and live
  // delivery continues.
  gap: async t => {
    const { c, log } = t.open('/hist', { recover: true, autoReconnectOptions: { minInterval: 1000, maxInterval: 1000 } });
    const chans = {};
    for (const name of ['small:g', 'hist:z', 'hist:k']) {
      chans[name] = c.subscribe(name).watch(d => log.push(['p', name, d.n]));
    }
    const small = chans['small:g'], zero = chans['hist:z'], kept = chans['hist:k'];
    await Promise.all(Object.values(chans).map(ch => ch.ready));
    await t.ctl('POST', 'numbered', { channel: 'small:g', n: 3 });
    await t.ctl('POST', 'numbered', { channel: 'hist:k', n: 2 });
    await t.until(() => small.position.offset === 3 && kept.position.offset === 2, 'the first publications');
    const e = Object.fromEntries(Object.entries(chans).map(([name, ch]) => [name, ch.position.epoch]));
    const pos = (offset, epoch) => ({ offset, epoch });
    // small:g keeps 10: 20 more is beyond its window. hist:z was at offset
    // 0, which cannot be asked for. hist:k keeps them all. 5 more each as
    // the page comes back: before its resubscribe they are part of the
    // gap, after it they follow it.
    const channels = Object.keys(chans).map(name => ['channel', name]);
    await t.ctl('POST', 'away', [...channels, ['n', 20], ['then', 5]]);
    const gapOf = name => log.find(x => x[0] === 'gap' && x[1].channel === name)?.[1];
    const got = name => log.filter(x => x[0] === 'p' && x[1] === name).map(x => x[2]);
    await t.until(() => gapOf('small:g') && gapOf('hist:z') && got('hist:k').length === 27, 'the gaps and the recovery');
    for (const name of Object.keys(chans)) await t.ctl('POST', 'numbered', { channel: name, n: 1 }); // live
    await t.until(() => small.position.offset === 29 && zero.position.offset === 26 && kept.position.offset === 28, 'the live publications');
    t.eq(log.filter(x => x[0] === 'gap').length, 2, 'gaps');
    const gs = gapOf('small:g'), gz = gapOf('hist:z');
    t.eq([gs.since, gz.since], [pos(3, e['small:g']), pos(0, e['hist:z'])], 'where the gaps start');
    t.eq([gs.position.epoch, gz.position.epoch], [e['small:g'], e['hist:z']], 'the epochs after the gaps');
    t.eq([gs.position.offset >= 23 && gs.position.offset <= 28, gz.position.offset >= 20 && gz.position.offset <= 25], [true, true],
      `where live delivery resumes: small:g after ${gs.position.offset} (23…28), hist:z after ${gz.position.offset} (20…25)`);
    t.seq(got('small:g').slice(0, 3), 1, 3, 'small:g before the gap');
    t.seq(got('small:g').slice(3), gs.position.offset + 1, 29, 'small:g after the gap');
    t.seq(got('hist:z'), gz.position.offset + 1, 26, 'hist:z after the gap');
    t.seq(got('hist:k'), 1, 28, 'hist:k, recovered');
    for (const name of ['small:g', 'hist:z']) {
      const gapAt = log.findIndex(x => x[0] === 'gap' && x[1].channel === name);
      const firstAfter = log.findIndex(x => x[0] === 'p' && x[1] === name && x[2] > (name === 'small:g' ? 3 : 0));
      t.eq(gapAt >= 0 && gapAt < firstAfter, true, `the gap of ${name} (at ${gapAt}) before the publications after it (from ${firstAfter})`);
    }

    // A new server, a new epoch: every channel has a gap, then gets live ones.
    log.length = 0;
    await t.ctl('POST', 'restart-hist');
    await t.until(() => log.filter(x => x[0] === 'gap').length === 3, 'a gap on every channel');
    t.eq(log.slice(0, 2), [['state', 'reconnecting'], ['disconnect', 1001, 'server shutting down']], 'the shutdown');
    const lastN = { 'small:g': 29, 'hist:z': 26, 'hist:k': 28 };
    for (const [name, ch] of Object.entries(chans)) {
      const g = gapOf(name);
      t.eq([g.since, g.position.offset, g.position.epoch !== e[name]], [pos(lastN[name], e[name]), 0, true], `the gap of ${name}`);
      await ch.ready;
      await t.ctl('POST', 'numbered', { channel: name, n: 1 });
      await t.until(() => ch.position.offset === 1, `the live publication on ${name}`);
      t.eq(ch.position.epoch, g.position.epoch, `the epoch of ${name}`);
    }
    t.eq(log.filter(x => x[0] === 'p').map(x => x.slice(1)), [['small:g', 30], ['hist:z', 27], ['hist:k', 29]], 'the publications after the restart');
  },

  // The order of recovery, against a server scripted in the page (a fake
  // WebSocket): duplicates dropped; what comes before a recovery's answer
  // held back until it, then delivered after its 'gap' if any; what was
  // held when the connection ends dropped and asked for again.
  'recover-order': async t => {
    const conns = [];
    class ScriptedWebSocket {
      static CONNECTING = 0;
      static OPEN = 1;
      static CLOSING = 2;
      static CLOSED = 3;
      constructor(url, protocols) {
        Object.assign(this, { url, offered: protocols, protocol: '', readyState: 0, binaryType: 'blob', sent: [] });
        this.onopen = this.onmessage = this.onclose = null;
        conns.push(this);
        setTimeout(() => {
          Object.assign(this, { readyState: 1, protocol: 'clusterws.v2' });
          this.onopen?.({});
          this.frame(['s', 'c', { ping: 0, binary: false, protocol: 'clusterws.v2' }]);
        }, 0);
      }
      send(data) { this.sent.push(data); }
      close() { this.readyState = 3; }
      frame(f) { this.onmessage?.({ data: JSON.stringify({ '#': f }) }); }
      subscribes() { return this.sent.map(d => JSON.parse(d)['#']).filter(f => f[0] === 's' && f[1] === 's').map(f => f[2]); }
      drop() { // the server closes
        this.readyState = 3;
        this.onclose?.({ code: 1012, reason: 'restart' });
      }
    }
    window.WebSocket = ScriptedWebSocket;
    const { c, log } = t.open('/scripted', { recover: true, autoReconnectOptions: { minInterval: 10, maxInterval: 10 } });
    const ch = c.subscribe('c').watch(d => log.push(['p', d]));
    const P = (offset, epoch = 'e1') => ({ offset, epoch });
    // request waits for connection n (from 1) and its subscribe.
    const request = async n => {
      await t.until(() => conns.length >= n && conns[n - 1].subscribes().length === 1, `the subscribe on connection ${n}`);
      return [conns[n - 1], conns[n - 1].subscribes()[0]];
    };
    const delivered = () => log.filter(x => x[0] === 'p').map(x => x[1]);

    let [ws, req] = await request(1);
    t.eq(req, { id: req.id, channel: 'c' }, 'the first subscribe');
    ws.frame(['s', 'a', { id: req.id, position: P(0) }]);
    await ch.ready;
    for (const n of [1, 2, 3, 2, 1, 3]) ws.frame(['p', 'c', n, P(n)]);
    t.eq([delivered(), ch.position], [[1, 2, 3], P(3)], 'duplicates dropped');

    // Recovered: what comes before the answer (the missed ones) is held
    // back until it.
    ws.drop();
    [ws, req] = await request(2);
    t.eq(req, { id: req.id, channel: 'c', since: P(3) }, 'the subscribe after a reconnect');
    ws.frame(['p', 'c', 4, P(4)]);
    ws.frame(['p', 'c', 5, P(5)]);
    t.eq(delivered(), [1, 2, 3], 'delivered before the answer');
    ws.frame(['s', 'a', { id: req.id, position: P(5), recovered: true }]);
    await ch.ready;
    ws.frame(['p', 'c', 5, P(5)]);
    ws.frame(['p', 'c', 6, P(6)]);
    t.eq(delivered(), [1, 2, 3, 4, 5, 6], 'recovered');

    // Not recovered, a new epoch: the live one that came before the
    // answer is delivered after the gap.
    ws.drop();
    [ws, req] = await request(3);
    t.eq(req.since, P(6), 'since');
    ws.frame(['p', 'c', 'x1', P(1, 'e2')]);
    ws.frame(['s', 'a', { id: req.id, position: P(1, 'e2'), recovered: false }]);
    await ch.ready;
    ws.frame(['p', 'c', 'x2', P(2, 'e2')]);

    // The connection ends before the answer: what was held back is
    // dropped, and asked for again from the same position.
    ws.drop();
    [ws, req] = await request(4);
    t.eq(req.since, P(2, 'e2'), 'since, on the 4th connection');
    ws.frame(['p', 'c', 'x3', P(3, 'e2')]);
    ws.drop();
    [ws, req] = await request(5);
    t.eq(req.since, P(2, 'e2'), 'since, on the 5th connection');
    ws.frame(['p', 'c', 'x3', P(3, 'e2')]);
    ws.frame(['s', 'a', { id: req.id, position: P(3, 'e2'), recovered: true }]);
    await ch.ready;
    t.eq(log.filter(x => x[0] === 'p' || x[0] === 'gap'), [
      ['p', 1], ['p', 2], ['p', 3], ['p', 4], ['p', 5], ['p', 6],
      ['gap', { channel: 'c', since: P(6), position: P(1, 'e2') }], ['p', 'x1'], ['p', 'x2'], ['p', 'x3'],
    ], 'the deliveries and the gap');
    t.eq(ch.position, P(3, 'e2'), 'the position at the end');
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
