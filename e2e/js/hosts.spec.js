'use strict';
// Clients of the npm clusterws-client-js@3.3.0, in Node and in headless
// Chromium pages, on the chi example's hosts, for ../hosts_test.go. The Go
// test drives: it asks for clients and reads what they saw; the checks
// are on its side.
//
//   node hosts.spec.js '{"chromium":"/usr/bin/chromium","userDataDir":"/tmp/…","waitMs":20000,"deadlineMs":170000}'
//
// Node needs a global WebSocket (Node 22, or 20 with --experimental-websocket).
//
// stdin, one JSON command a line, answered by {"ev":"reply","id":…,"error":"…"|undefined,…}:
//   {"id":1,"op":"open","name":"ann-a1","url":"ws://127.0.0.1:P/ws?name=ann","rooms":["room:lobby"],
//    "page":"http://127.0.0.1:Q"}       a client (in a new Chromium page, hosts.html at that
//                                        origin, when "page" is set); answered once it is
//                                        welcomed and its rooms are joined: {"worker":n,"socket":"…"}
//   {"id":2,"op":"logs"}                 every client's record: {"clients":{name:{worker,socket,user,log}}}
//   {"id":3,"op":"quit"}                 close everything and exit 0
// stdout also carries {"ev":"launched"|"step"|"console"|"pageerror"|"fail",…} (see browser.js).

const readline = require('readline');
const { cfg, emit, launch } = require('./browser');

global.window = { WebSocket: globalThis.WebSocket }; // the npm client reads window.WebSocket when required
if (typeof window.WebSocket !== 'function') {
  emit({ ev: 'fail', error: 'no global WebSocket in this Node (20: run with --experimental-websocket)', logs: {} });
  process.exit(1);
}
const ClusterWS = require('clusterws-client-js');
const track = require('./hosts-client');

const WAIT = cfg.waitMs || 20000;
let ctx = null; // the browser, launched on the first page
const clients = new Map(); // name → {rec} (Node) or {page} (Chromium)

async function browser() {
  ctx ??= await launch();
  return ctx;
}

async function until(what, cond) {
  const deadline = Date.now() + WAIT;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what} within ${WAIT} ms`);
    await new Promise(resolve => setTimeout(resolve, 25));
  }
}

async function record(c) {
  if (c.rec) return c.rec;
  return c.page.evaluate(() => window.rec);
}

async function open(cmd) {
  if (clients.has(cmd.name)) throw new Error(`client ${cmd.name} exists`);
  let c;
  if (cmd.page) {
    const page = await (await browser()).newPage();
    page.on('pageerror', e => emit({ ev: 'pageerror', page: cmd.name, error: String(e && e.stack || e) }));
    page.on('console', m => {
      if (m.type() === 'error' || m.type() === 'warning') emit({ ev: 'console', page: cmd.name, text: m.text() });
    });
    await page.goto(`${cmd.page}/__e2e/hosts.html`, { timeout: WAIT });
    await page.evaluate(([url, rooms]) => { window.rec = window.track(window.ClusterWS, url, rooms); }, [cmd.url, cmd.rooms || []]);
    c = { page };
  } else {
    c = { rec: track(ClusterWS, cmd.url, cmd.rooms || []) };
  }
  clients.set(cmd.name, c);
  try {
    await until(`${cmd.name} was not welcomed and in its rooms`, async () => (await record(c)).ready);
  } catch (e) {
    throw new Error(`${e.message}: ${JSON.stringify((await record(c)).log)}`);
  }
  const rec = await record(c);
  return { worker: rec.worker, socket: rec.socket };
}

async function logs() {
  const out = {};
  for (const [name, c] of clients) {
    const { worker, socket, user, log } = await record(c);
    out[name] = { worker, socket, user, log };
  }
  return { clients: out };
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'open': return open(cmd);
    case 'logs': return logs();
    default: throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

async function quit() {
  if (ctx) await ctx.close().catch(e => emit({ ev: 'step', msg: `closing the browser: ${e.message}` }));
  process.exit(0);
}

// Commands run one at a time, in order.
let chain = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', line => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  chain = chain.then(async () => {
    if (cmd.op === 'quit') return quit();
    try {
      emit(Object.assign({ ev: 'reply', id: cmd.id }, await handle(cmd)));
    } catch (e) {
      emit({ ev: 'reply', id: cmd.id, error: String(e && e.stack || e) });
    }
  });
}).on('close', () => { chain = chain.then(quit); });
