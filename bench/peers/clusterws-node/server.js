// The original ClusterWS 3.3.1 (Node 10, uWS) as a benchmark peer:
// `workers` worker processes and one broker, ClusterWS's own clustered mode.
// Every socket answers the load generator's "echo" and "whoami" events and
// relays "pub" events ({c: channel, d: data}) with wss.publish.
//
//   node_modules/.bin/node server.js PORT BROKER_PORT [WORKERS]
'use strict';
const ClusterWS = require('clusterws');

const port = Number(process.argv[2] || 8003);
const brokerPort = Number(process.argv[3] || 9403);
const workers = Number(process.argv[4] || 2);

function Worker() {
  const wss = this.wss;
  wss.on('connection', (socket) => {
    socket.on('echo', (data) => socket.send('echo', data));
    socket.on('whoami', () => socket.send('whoami', process.pid));
    socket.on('pub', (m) => m && typeof m.c === 'string' && wss.publish(m.c, m.d));
  });
}

new ClusterWS({
  worker: Worker,
  workers,
  brokers: 1,
  brokersPorts: [brokerPort],
  port,
  host: '127.0.0.1',
  pingInterval: 20000,
});
