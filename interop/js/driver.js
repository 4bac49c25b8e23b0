'use strict';
// Drives one published ClusterWS JavaScript client (clusterws-client-js) for
// the Go interop tests in ../interop_test.go.
//
//   node driver.js ws://127.0.0.1:PORT/ws ['{"autoReconnect":true}']
//
// The optional second argument is merged into the client's configuration.
//
// stdin:  one JSON command a line, e.g. {"id":3,"op":"subscribe","channel":"news"}.
//         Commands run in order; each is answered with {"ev":"done","id":3}
//         (or {"ev":"exception",...} if the client threw).
// stdout: one JSON observation a line:
//   {"ev":"frame","binary":b,"len":n,"head":"..."}  every raw message, before the client sees it
//   {"ev":"connect"}                                the client's 'connect' event
//   {"ev":"disconnect","code":n,"reason":"..."}     the client's 'disconnect' event
//   {"ev":"error","message":"..."}                  the client's 'error' event
//   {"ev":"event","event":name,"data":v}            a listener added with op "on" fired
//   {"ev":"publish","channel":name,"data":v}        a channel watched with op "subscribe" got data
//   {"ev":"log","text":"..."}                       the client logged (it logs its own errors)
// The process exits when stdin closes.

const readline = require('readline');
const WebSocket = require('ws');

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// The client uses window.WebSocket; give it ws, wrapped so that every raw
// message is reported before the client's own onmessage handler runs.
class TracingWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    this.addEventListener('message', (e) => {
      const binary = typeof e.data !== 'string';
      // Binary frames are shown one byte per character, as the client reads them.
      const text = binary ? Buffer.from(e.data).toString('latin1') : e.data;
      out({ ev: 'frame', binary, len: text.length, head: text.slice(0, 200) });
    });
  }
}
global.window = { WebSocket: TracingWebSocket };
// The client reports its errors (e.g. a frame it cannot parse) with console.log.
console.log = (...args) => out({ ev: 'log', text: args.map(String).join(' ') });

const ClusterWS = require('clusterws-client-js');

const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: node driver.js <ws-url> [client-options-json]\n');
  process.exit(2);
}
const client = new ClusterWS(Object.assign({ url }, JSON.parse(process.argv[3] || '{}')));
client.on('connect', () => out({ ev: 'connect' }));
client.on('disconnect', (code, reason) => out({ ev: 'disconnect', code, reason }));
client.on('error', (e) => out({ ev: 'error', message: String((e && e.message) || e) }));

const ops = {
  on: (c) => client.on(c.event, (data) => out({ ev: 'event', event: c.event, data })),
  send: (c) => client.send(c.event, c.data),
  subscribe: (c) =>
    client.subscribe(c.channel).watch((data) => out({ ev: 'publish', channel: c.channel, data })),
  publish: (c) => client.getChannelByName(c.channel).publish(c.data),
  // A publish frame for a channel the client never subscribed to: the
  // client's public send() with its 'publish' message type.
  publishUnsubscribed: (c) => client.send(c.channel, c.data, 'publish'),
  unsubscribe: (c) => client.getChannelByName(c.channel).unsubscribe(),
  disconnect: (c) => client.disconnect(c.code, c.reason),
};

readline
  .createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on('line', (line) => {
    let cmd;
    try {
      cmd = JSON.parse(line);
      ops[cmd.op](cmd);
    } catch (e) {
      out({ ev: 'exception', id: cmd && cmd.id, op: cmd && cmd.op, message: String(e) });
      return;
    }
    out({ ev: 'done', id: cmd.id });
  })
  .on('close', () => process.exit(0));
