'use strict';
// A remote control of Chromium for TestRecovery (../recovery_test.go): the
// Go test decides every step; this script opens the pages, cuts them off
// the network and back, and reports what they recorded (recovery.html).
//
//   node recovery.spec.js '{"chromium":"/usr/bin/chromium","waitMs":20000,"deadlineMs":…}'
//
// stdin: one JSON command a line, {"id":k,"op":…}:
//   open {url}        a fresh browser context (no cookies) with two pages of
//                     url + recovery.html, client=npm and client=fp, user "rec";
//                     answers once both are connected and subscribed
//   status            {pages: {npm: {…}, fp: {…}}} without the publications
//   received          {pages: {npm: {…, seqs, positions, gaps}, fp: …}}
//   close             close the browser context
//   quit              close Chromium and exit
// stdout: JSON lines: {"ev":"reply","id":k,"data":…} or
// {"ev":"reply","id":k,"error":"…"}, and the diagnostics of browser.js.

const readline = require('readline');
const { chromium } = require('playwright-core');
const { cfg, emit } = require('./browser');

const WAIT = cfg.waitMs || 20000;
const KINDS = ['npm', 'fp'];

let browser = null;
let context = null;
let pages = {}; // kind → {page}

async function open(url) {
  if (context) await context.close();
  context = await browser.newContext();
  pages = {};
  for (const kind of KINDS) {
    const page = await context.newPage();
    page.on('pageerror', e => emit({ ev: 'pageerror', page: kind, error: String(e && e.stack || e) }));
    page.on('console', m => {
      // Reconnects refused while the test keeps the clients away are expected.
      if (/Unexpected response code: 503/.test(m.text())) return;
      if (m.type() === 'error' || m.type() === 'warning') emit({ ev: 'console', page: kind, text: m.text() });
    });
    pages[kind] = { page };
    await page.goto(`${url}recovery.html?client=${kind}&user=rec`, { timeout: WAIT });
  }
  for (const kind of KINDS) {
    try {
      await pages[kind].page.waitForFunction(() => window.rec && rec.connected && rec.worker > 0 && rec.subscribed,
        null, { timeout: WAIT, polling: 50 });
    } catch (e) {
      throw new Error(`page ${kind}: not connected and subscribed within ${WAIT} ms: ${e.message}`);
    }
  }
  return state(false);
}

async function state(full) {
  const out = {};
  for (const kind of KINDS) {
    out[kind] = await pages[kind].page.evaluate(full => {
      const { seqs, positions, raw, wire, ...rest } = window.rec;
      const last = seqs.length ? seqs[seqs.length - 1] : 0;
      return full ? { ...rest, count: seqs.length, last, seqs, positions, raw, wire } : { ...rest, count: seqs.length, last };
    }, full);
  }
  return { pages: out };
}

async function run(cmd) {
  switch (cmd.op) {
    case 'open': return open(cmd.url);
    case 'status': return state(false);
    case 'received': return state(true);
    case 'close':
      if (context) await context.close();
      context = null;
      return {};
    case 'quit':
      await browser.close();
      process.exit(0);
  }
  throw new Error(`unknown op ${cmd.op}`);
}

(async () => {
  browser = await chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Both pages are live at once: none may be throttled as a background tab.
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows'],
    timeout: cfg.launchMs || 60000,
  });
  emit({ ev: 'launched', version: browser.version() });
  // One command at a time, in order.
  let chain = Promise.resolve();
  readline.createInterface({ input: process.stdin }).on('line', line => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    chain = chain.then(() => run(cmd)).then(
      data => emit({ ev: 'reply', id: cmd.id, data }),
      e => emit({ ev: 'reply', id: cmd.id, error: String(e && e.stack || e) }));
  }).on('close', () => process.exit(0));
})().catch(e => {
  emit({ ev: 'fail', error: String(e && e.stack || e) });
  process.exit(1);
});
