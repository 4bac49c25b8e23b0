'use strict';
// Drives js/deflate.html (the npm clusterws-client-js 3.3.0 in Chromium)
// against a server with permessage-deflate on, for ../deflate_test.go.
//
//   node deflate.spec.js '{"url":"http://127.0.0.1:PORT/","chromium":"/usr/bin/chromium",
//                          "userDataDir":"/tmp/…","waitMs":10000,"deadlineMs":50000}'
//
// stdout: one JSON event a line:
//   {"ev":"subscribed"}          the page subscribed to "news"; the Go side publishes,
//                                then answers {"op":"continue"} on stdin
//   {"ev":"got","text":"…"}      the data of the first publish the page got, as JSON; the
//                                page then sends it back as the event "big"
//   {"ev":"pass"} or {"ev":"fail","error":"…"}, then the process exits 0 or 1.

const readline = require('readline');
const { cfg, emit, launch } = require('./browser');

const WAIT = cfg.waitMs || 10000;

const lines = [];
let wake = null;
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim()) lines.push(JSON.parse(line));
  if (wake) wake();
});
async function command() {
  const deadline = Date.now() + WAIT;
  while (lines.length === 0) {
    if (Date.now() > deadline) throw new Error(`no command from the Go test within ${WAIT} ms`);
    await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 100); });
  }
  return lines.shift();
}

(async () => {
  let ctx;
  try {
    ctx = await launch();
    const page = await ctx.newPage();
    page.on('pageerror', (e) => emit({ ev: 'pageerror', page: 'a', error: String(e) }));
    await page.goto(cfg.url);
    await page.waitForFunction(() => document.getElementById('state').textContent === 'subscribed', null, { timeout: WAIT });
    emit({ ev: 'subscribed' });
    const cmd = await command();
    if (cmd.op !== 'continue') throw new Error(`unexpected command ${JSON.stringify(cmd)}`);
    await page.waitForFunction(() => window.got.length > 0, null, { timeout: WAIT });
    const text = await page.evaluate(() => {
      window.socket.send('big', window.got[0]);
      return JSON.stringify(window.got[0]);
    });
    emit({ ev: 'got', text });
    await ctx.close();
    emit({ ev: 'pass' });
    process.exit(0);
  } catch (e) {
    emit({ ev: 'fail', error: String((e && e.stack) || e) });
    process.exit(1);
  }
})();
