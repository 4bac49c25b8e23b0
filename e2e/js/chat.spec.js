'use strict';
// Drives a chat page of the chi example in headless Chromium with
// playwright-core, for the Go tests in ../chat_test.go: the example's own
// page (chi_example/static/index.html, the browser client served by the
// server), or with "firstParty":false the 3.x page of npm-chat.html (the
// published npm client). Both write log lines with data-line (the text) and
// data-worker (the worker that took a message or join in).
//
//   node chat.spec.js '{"url":"http://127.0.0.1:PORT/","firstParty":true,"chromium":"/usr/bin/chromium",
//                       "userDataDir":"/tmp/…","artifacts":"/…/e2e/artifacts/Test…",
//                       "waitMs":20000,"deadlineMs":110000}'
//
// stdout: one JSON event a line:
//   {"ev":"step","msg":"…"}                        progress, for the test log
//   {"ev":"launched","version":"…"}                Chromium is up
//   {"ev":"pages","a":{worker,id},"b":…,"tries":n} A and B are on different workers, after n
//                                                  connections of B
//   {"ev":"features","presence":b,"history":b}     what the example's broker keeps for all workers
//   {"ev":"kill","worker":n}                       the Go side must kill that worker (kill -9),
//                                                  then answer {"op":"continue"} on stdin
//                                                  (first-party page only)
//   {"ev":"screenshot","page":"a","path":"…"}      a screenshot was saved
//   {"ev":"pageerror"|"console",…}                 diagnostics from the pages
//   {"ev":"pass"} or {"ev":"fail","error":"…","logs":{…}}, then the process exits 0 or 1.
// stdin: one JSON command a line: {"op":"continue"} or {"op":"abort","reason":"…"}.

const path = require('path');
const readline = require('readline');
const { cfg, emit, launch } = require('./browser');

const WAIT = cfg.waitMs || 20000; // one observation
const SPREAD = cfg.spreadMs || 45000; // for page B to land on another worker than A
const FIRST = cfg.firstParty !== false;
const nonce = Math.random().toString(36).slice(2, 8);

const step = msg => emit({ ev: 'step', msg });

// Commands from the Go side, in order.
const commands = [];
let commandWaiter = null;
readline.createInterface({ input: process.stdin }).on('line', line => {
  if (!line.trim()) return;
  commands.push(JSON.parse(line));
  if (commandWaiter) commandWaiter();
});
async function nextCommand(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (commands.length === 0) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no command from the Go test within ${timeoutMs} ms`);
    await new Promise(resolve => {
      const timer = setTimeout(resolve, left);
      commandWaiter = () => { clearTimeout(timer); resolve(); };
    });
    commandWaiter = null;
  }
  return commands.shift();
}

const pages = []; // every chat page opened, for the failure report
const pageErrors = [];

// openPage opens the chat in a new tab as user (?name=; none: the page's
// guest name) and waits until it is connected.
async function openPage(ctx, name, user) {
  const page = await ctx.newPage();
  const p = { name, page, worker: null, id: null, user };
  pages.push(p);
  page.on('pageerror', e => {
    pageErrors.push(`${p.name}: ${e && e.stack || e}`);
    emit({ ev: 'pageerror', page: p.name, error: String(e && e.stack || e) });
  });
  page.on('console', m => {
    if (m.type() === 'error' || m.type() === 'warning') {
      emit({ ev: 'console', page: p.name, type: m.type(), text: `${m.text()} (${m.location().url})` });
    }
  });
  await page.goto(user ? `${cfg.url}?name=${encodeURIComponent(user)}` : cfg.url, { timeout: WAIT });
  await connected(p);
  return p;
}

// openOnOtherWorker returns a chat page connected to another worker than
// worker, and how many connections that took. The master dispatches
// connections round-robin, but a page's HTTP requests take turns too, so it
// tries a few pages at once and reloads them until one lands elsewhere.
async function openOnOtherWorker(ctx, name, user, worker) {
  const deadline = Date.now() + SPREAD;
  const candidates = await Promise.all([1, 2, 3].map(i => openPage(ctx, `${name}${i}`, user)));
  let tries = candidates.length;
  for (;;) {
    const hit = candidates.find(p => p.worker !== worker);
    if (hit) {
      for (const p of candidates) {
        if (p === hit) continue;
        pages.splice(pages.indexOf(p), 1);
        await p.page.close();
      }
      hit.name = name;
      return { page: hit, tries };
    }
    check(Date.now() < deadline,
      `all ${tries} connections of page ${name} in ${SPREAD} ms landed on worker ${worker}, like page A: cannot test delivery across workers`);
    await Promise.all(candidates.map(async p => {
      await p.page.reload({ timeout: WAIT });
      await connected(p);
    }));
    tries += candidates.length;
  }
}

// connected waits until p's socket is connected and welcomed with an id
// other than notID, and records its worker and socket id.
async function connected(p, notID) {
  try {
    await p.page.waitForFunction(notID => {
      const me = document.getElementById('me').textContent;
      return me !== '?' && me !== notID && document.getElementById('state').classList.contains('up');
    }, notID || null, { timeout: WAIT, polling: 50 });
  } catch (e) {
    throw new Error(`page ${p.name}: not connected (and welcomed) within ${WAIT} ms: ${e.message}; log: ${JSON.stringify(await lines(p))}`);
  }
  p.worker = Number((await p.page.textContent('#worker')).trim());
  p.id = (await p.page.textContent('#me')).trim();
  return p;
}

async function lines(p) {
  try {
    return await p.page.$$eval('#log li[data-line]', lis => lis.map(li => li.dataset.line));
  } catch (e) {
    return [`(cannot read the log: ${e.message})`];
  }
}

// waitLine waits until p's log has at least count lines equal to text (or,
// with prefix, starting with it), taken in by worker if given.
async function waitLine(p, text, { count = 1, prefix = false, worker = null } = {}) {
  try {
    await p.page.waitForFunction(([text, count, prefix, worker]) => {
      let n = 0;
      for (const li of document.querySelectorAll('#log li[data-line]')) {
        const t = li.dataset.line;
        if ((prefix ? t.startsWith(text) : t === text) && (worker === null || li.dataset.worker === String(worker))) n++;
      }
      return n >= count;
    }, [text, count, prefix, worker], { timeout: WAIT, polling: 50 });
  } catch (e) {
    const what = `${count > 1 ? count + ' lines' : 'a line'} ${prefix ? 'starting with ' : ''}${JSON.stringify(text)}` +
      (worker === null ? '' : ` from worker ${worker}`);
    throw new Error(`page ${p.name} (worker ${p.worker}): no ${what} in #log within ${WAIT} ms; log: ${JSON.stringify(await lines(p))}`);
  }
}

async function join(p, room) {
  await p.page.fill('#room', room);
  await p.page.click('#join');
}

// members returns the first-party page's list of who is in its room:
// {user: [socket ids]}.
async function members(p) {
  const lis = await p.page.$$eval('#members li', lis => lis.map(li => [li.dataset.user, li.dataset.sockets.split(' ')]));
  return Object.fromEntries(lis);
}

// waitMembers waits until p lists exactly want ({user: [socket ids]}),
// for at most ms.
async function waitMembers(p, want, ms = WAIT) {
  const norm = m => JSON.stringify(Object.keys(m).sort().map(u => [u, [...m[u]].sort()]));
  const deadline = Date.now() + ms;
  let got;
  while (norm(got = await members(p)) !== norm(want)) {
    if (Date.now() > deadline) {
      throw new Error(`page ${p.name}: members ${JSON.stringify(got)}, want ${JSON.stringify(want)} within ${ms} ms; log: ${JSON.stringify(await lines(p))}`);
    }
    await new Promise(resolve => setTimeout(resolve, 50));
  }
}

// offline cuts p off the network: its WebSocket stays up, but it cannot
// open a new one (Chromium's network emulation), until online.
async function offline(p, on) {
  p.cdp ??= await p.page.context().newCDPSession(p.page);
  await p.cdp.send('Network.emulateNetworkConditions', { offline: on, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
}

async function say(p, text) {
  await p.page.fill('#text', text);
  await p.page.click('#send');
}

async function whisper(p, to, text) { // to a user
  await p.page.fill('#to', to);
  await p.page.fill('#whisper-text', text);
  await p.page.click('#whisper');
}

function check(ok, msg) {
  if (!ok) throw new Error(msg);
}

async function screenshot(p, file) {
  const out = path.join(cfg.artifacts, file);
  await p.page.screenshot({ path: out, fullPage: true, timeout: WAIT });
  emit({ ev: 'screenshot', page: p.name, path: out });
}

async function scenario(ctx) {
  // 1. Two pages on different workers, in one room, chatting both ways.
  step('open page A');
  const A = await openPage(ctx, 'A', 'alice');
  step(`page A is on worker ${A.worker} as ${A.id}; open page B`);
  const { page: B, tries } = await openOnOtherWorker(ctx, 'B', 'bob', A.worker);
  emit({ ev: 'pages', a: { worker: A.worker, id: A.id }, b: { worker: B.worker, id: B.id }, tries });
  const has = async what => (await A.page.getAttribute('body', `data-${what}`)) === 'true';
  const presence = await has('presence'), history = await has('history');
  emit({ ev: 'features', presence, history });
  if (FIRST) {
    const host = (await A.page.textContent('#host')).trim();
    check(host !== '' && host !== '?', `page A does not show its host: ${JSON.stringify(host)}`);
    check((await A.page.textContent('#user')).trim() === 'alice', 'page A does not show its user');
    check(await A.page.isDisabled('#text') && await A.page.isDisabled('#send'), 'page A can send before joining a room');
  }

  // Joins are presence events of the room, published by the joining
  // socket's worker: B's reaches A across workers.
  await join(A, 'lobby');
  if (presence) await waitLine(A, 'alice joined lobby');
  await join(B, 'lobby');
  if (presence) {
    await waitLine(B, 'bob joined lobby');
    await waitLine(A, 'bob joined lobby');
    if (FIRST) {
      await waitMembers(A, { alice: [A.id], bob: [B.id] });
      await waitMembers(B, { alice: [A.id], bob: [B.id] });
    }
  }

  // Each message shows the worker that took it in: the sender's.
  const m1 = `hello from alice ${nonce}`;
  await say(A, m1);
  await waitLine(A, `alice: ${m1}`, { worker: A.worker }); // a publisher subscribed to the room gets its own message
  await waitLine(B, `alice: ${m1}`, { worker: A.worker });
  const m2 = `hello from bob ${nonce}`;
  await say(B, m2);
  await waitLine(B, `bob: ${m2}`, { worker: B.worker });
  await waitLine(A, `bob: ${m2}`, { worker: B.worker });
  step('A and B chat across workers');

  // 2. A page in another room hears nothing of the lobby; on the
  // first-party page, a private room without a token is refused first,
  // with the server's reason.
  const C = await openPage(ctx, 'C', 'carol');
  step(`page C is on worker ${C.worker}; it joins room "other"`);
  if (FIRST) {
    await join(C, 'private-club');
    await waitLine(C, 'cannot join private-club: 403 private room: open the page with ?token=…');
    check(await C.page.isDisabled('#send'), 'page C can send after its join was refused');
    step('page C was refused room "private-club", with the reason');
  }
  await join(C, 'other');
  if (presence) await waitLine(C, 'carol joined other');
  const m3 = `still in the lobby ${nonce}`;
  await say(A, m3);
  await waitLine(B, `alice: ${m3}`);
  const c1 = `carol alone ${nonce}`;
  await say(C, c1);
  await waitLine(C, `carol: ${c1}`);

  // 3. Page D, bob's second tab: on the first-party page it comes as a
  // guest, types the name bob and joins the lobby (the page connects
  // again as bob), where it is shown the recent messages.
  let D;
  if (FIRST) {
    D = await openPage(ctx, 'D');
    const guest = (await D.page.textContent('#user')).trim();
    check(/^guest-/.test(guest), `page D opened without a name is ${JSON.stringify(guest)}, not a guest`);
    const guestID = D.id;
    await D.page.fill('#name', 'bob');
    await join(D, 'lobby');
    await connected(D, guestID);
    check((await D.page.textContent('#user')).trim() === 'bob', 'page D is not bob after typing the name');
    if (presence) await waitLine(D, 'bob joined lobby');
    if (history) {
      for (const [who, m] of [['alice', m1], ['bob', m2], ['alice', m3]]) await waitLine(D, `${who}: ${m}`);
      const old = await D.page.$$eval('#log li.old', lis => lis.map(li => li.dataset.line));
      check(JSON.stringify(old) === JSON.stringify([`alice: ${m1}`, `bob: ${m2}`, `alice: ${m3}`]), `page D's recent messages: ${JSON.stringify(old)}`);
    }
    if (presence) {
      await waitMembers(A, { alice: [A.id], bob: [B.id, D.id] });
      await waitMembers(D, { alice: [A.id], bob: [B.id, D.id] });
    }
    step(`page D is bob's second tab, on worker ${D.worker}`);
  } else {
    D = await openPage(ctx, 'D', 'bob');
  }

  // 4. A whisper to bob reaches both his pages, and alice's.
  const w = `psst ${nonce}`;
  await whisper(A, 'bob', w);
  await waitLine(A, `you whisper to bob: ${w}`);
  await waitLine(B, `alice whispers: ${w}`);
  await waitLine(D, `alice whispers: ${w}`);
  const c2 = `carol after the whisper ${nonce}`;
  await say(C, c2);
  await waitLine(C, `carol: ${c2}`);
  step('whisper delivered to both of bob\'s pages');

  // 5. Kill A's worker while A cannot reconnect (offline: its socket stays
  // up until the kill, new ones fail); B chats meanwhile. Then A comes
  // back (to whichever worker accepts): with history it gets what it
  // missed, exactly once, otherwise the page says it is lost; it is in the
  // lobby again and chats with B both ways; B stays connected.
  const messages = [m1, m2, m3];
  let missed = [];
  if (FIRST) {
    const oldA = { worker: A.worker, id: A.id };
    await offline(A, true);
    emit({ ev: 'kill', worker: A.worker });
    const cmd = await nextCommand(cfg.killWaitMs || 60000);
    check(cmd.op === 'continue', `the Go test said ${JSON.stringify(cmd)}`);
    await waitLine(A, 'disconnected: ', { prefix: true });
    const down = (await lines(A)).find(t => t.startsWith('disconnected: '));
    check(down.endsWith(', reconnecting…'), `page A does not say it reconnects: ${JSON.stringify(down)}`);
    missed = [1, 2, 3].map(i => `while alice is away ${i} ${nonce}`);
    for (const m of missed) {
      await say(B, m);
      await waitLine(B, `bob: ${m}`);
    }
    check(!(await A.page.$eval('#state', el => el.classList.contains('up'))), 'page A reconnected while offline');
    step('B chatted while A was away; A goes online');
    await offline(A, false);
    await connected(A, oldA.id);
    step(`page A reconnected to worker ${A.worker} as ${A.id}`);
    if (D.worker === oldA.worker) await connected(D, D.id); // D was on the killed worker too
    if (presence) {
      await waitLine(A, 'alice joined lobby', { count: 2 });
      await waitLine(B, 'alice joined lobby'); // B joined after A's first join
      // The killed worker announced no leave: the pages read the list
      // again (every 10 s; with Redis its members last up to their 15 s
      // lease).
      await waitMembers(A, { alice: [A.id], bob: [B.id, D.id] }, 3 * WAIT);
      await waitMembers(B, { alice: [A.id], bob: [B.id, D.id] }, 3 * WAIT);
    }
    if (history) {
      for (const m of missed) await waitLine(A, `bob: ${m}`, { worker: B.worker });
    } else {
      await waitLine(A, 'messages sent to lobby while disconnected are lost: this server keeps no history');
    }
    const m4 = `alice is back ${nonce}`;
    await say(A, m4);
    await waitLine(A, `alice: ${m4}`, { worker: A.worker });
    await waitLine(B, `alice: ${m4}`, { worker: A.worker });
    const m5 = `welcome back ${nonce}`;
    await say(B, m5);
    await waitLine(B, `bob: ${m5}`);
    await waitLine(A, `bob: ${m5}`, { worker: B.worker });
    messages.push(m4, m5);
    step(`A and B chat again after the worker was killed (history ${history ? 'on: A recovered what B said meanwhile' : 'off'})`);
  }

  // What must not have happened, checked once everything above was seen.
  const la = await lines(A), lb = await lines(B), lc = await lines(C), ld = await lines(D);
  // C may have been on the killed worker too, and then reconnected.
  const own = ['connected to worker ', 'disconnected: ', 'cannot join private-club: ', 'carol joined other', 'carol: ', 'messages sent to other while disconnected'];
  const stray = lc.filter(t => !own.some(prefix => t.startsWith(prefix)));
  check(stray.length === 0, `page C (room "other") got lines that are not its own: ${JSON.stringify(stray)}; log: ${JSON.stringify(lc)}`);
  check(!la.concat(lc).some(t => t.includes('whispers:')), `page A or C got a whisper: A ${JSON.stringify(la)} C ${JSON.stringify(lc)}`);
  for (const [p, l] of [[B, lb], [D, ld]]) {
    check(l.filter(t => t.includes(w)).length === 1, `page ${p.name} did not get the whisper exactly once: ${JSON.stringify(l)}`);
  }
  check(la.filter(t => t.includes(w)).length === 1, `page A did not see its whisper exactly once: ${JSON.stringify(la)}`);
  check(!la.concat(lb, ld).some(t => t.includes('carol')), `a lobby page got something from room "other": A ${JSON.stringify(la)} B ${JSON.stringify(lb)} D ${JSON.stringify(ld)}`);
  check(!lb.some(t => t.startsWith('disconnected')), `page B was disconnected: ${JSON.stringify(lb)}`);
  const all = [la, lb, lc, ld].flat();
  check(!all.some(t => t.startsWith('error') || t.startsWith('not sent') || t.includes('were lost')), `a page shows an error: A ${JSON.stringify(la)} B ${JSON.stringify(lb)} C ${JSON.stringify(lc)} D ${JSON.stringify(ld)}`);
  const count = (l, m) => l.filter(t => t.endsWith(`: ${m}`)).length;
  for (const m of [...messages, ...missed]) {
    check(count(lb, m) === 1, `page B got ${JSON.stringify(m)} ${count(lb, m)} times: ${JSON.stringify(lb)}`);
    check(count(ld, m) <= 1, `page D got ${JSON.stringify(m)} ${count(ld, m)} times: ${JSON.stringify(ld)}`);
    const want = missed.includes(m) && !history ? 0 : 1;
    check(count(la, m) === want, `page A got ${JSON.stringify(m)} ${count(la, m)} times, want ${want}: ${JSON.stringify(la)}`);
  }
  // In order: what A got is what B got.
  const order = l => l.filter(t => [...messages, ...missed].some(m => t.endsWith(`: ${m}`)));
  const want = order(lb).filter(t => history || !missed.some(m => t.endsWith(`: ${m}`)));
  check(JSON.stringify(order(la)) === JSON.stringify(want), `page A's messages are not B's, in order: A ${JSON.stringify(order(la))} B ${JSON.stringify(order(lb))}`);
  check(pageErrors.length === 0, `uncaught errors in the pages: ${pageErrors.join('\n')}`);

  // 6. Screenshots.
  await screenshot(A, 'chat-a.png');
  await screenshot(B, 'chat-b.png');
  await screenshot(C, 'chat-c.png');
  await screenshot(D, 'chat-d.png');
}

async function main() {
  const ctx = await launch({ viewport: { width: 900, height: 760 } });
  ctx.setDefaultTimeout(WAIT);
  let failure = null;
  try {
    await scenario(ctx);
  } catch (e) {
    failure = e;
  }
  if (failure) {
    const logs = {};
    for (const p of pages) {
      logs[p.name] = { worker: p.worker, id: p.id, log: await lines(p) };
      await screenshot(p, `failure-${p.name.toLowerCase()}.png`).catch(() => {});
    }
    emit({ ev: 'fail', error: String(failure && failure.stack || failure), logs });
  }
  await ctx.close().catch(e => emit({ ev: 'step', msg: `closing the browser: ${e.message}` }));
  if (!failure) emit({ ev: 'pass' });
  process.exit(failure ? 1 : 0);
}

main().catch(e => {
  emit({ ev: 'fail', error: String(e && e.stack || e), logs: {} });
  process.exit(1);
});
