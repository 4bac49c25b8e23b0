'use strict';
// What the browser scenarios (*.spec.js) share: their configuration (the
// first argument, JSON), their output (JSON lines on stdout, read by the Go
// tests) and Chromium.

const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2] || '{}');

// emit writes one event for the Go test.
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// launch starts cfg.chromium, Debian's Chromium (never a downloaded one),
// on the profile cfg.userDataDir, and reports it.
async function launch(options = {}) {
  const ctx = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: cfg.launchMs || 60000,
    ...options,
  });
  emit({ ev: 'launched', version: ctx.browser() ? ctx.browser().version() : '' });
  return ctx;
}

// Report rather than hang if the Go side's deadline is near.
setTimeout(() => {
  emit({ ev: 'fail', error: `the scenario did not finish within ${cfg.deadlineMs} ms`, logs: {} });
  process.exit(1);
}, cfg.deadlineMs || 110000).unref();

module.exports = { cfg, emit, launch };
