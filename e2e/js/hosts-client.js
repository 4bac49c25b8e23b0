'use strict';
// One npm clusterws-client-js@3.3.0 client of the chi example and a record
// of everything it saw, for hosts.spec.js. The same file runs in Node
// (required) and in the page hosts.html (a plain script: window.track).
(function (root) {
  // track connects ClusterWS (the npm client's constructor) to url and
  // joins rooms once welcomed: each room's presence companion first, then
  // the room, so that the socket's own join, seen on the companion, says
  // both subscriptions are routed (the hub subscribes in order and returns
  // once the broker routes the channel). No reconnect: a closed socket
  // stays closed, so its close code is the last word.
  function track(ClusterWS, url, rooms) {
    const rec = { worker: null, socket: null, user: null, ready: false, log: [] };
    const joined = new Set();
    const c = new ClusterWS({ url, autoReconnect: false });
    c.on('welcome', w => {
      rec.worker = w.worker;
      rec.socket = w.id;
      rec.user = w.user;
      rec.log.push({ k: 'welcome', worker: w.worker, socket: w.id, user: w.user });
      for (const room of rooms) {
        c.subscribe(`${room}/presence`).watch(ev => {
          rec.log.push(Object.assign({ k: 'presence' }, ev));
          if (ev.event === 'join' && ev.socket === rec.socket) joined.add(room);
          if (joined.size === rooms.length) rec.ready = true;
        });
        c.subscribe(room).watch(data => rec.log.push({ k: 'pub', ch: room, data }));
      }
      if (rooms.length === 0) rec.ready = true;
    });
    // The event the Go test sends with the API's send_to_user.
    c.on('notice', data => rec.log.push({ k: 'event', name: 'notice', data }));
    c.on('disconnect', (code, reason) => rec.log.push({ k: 'disconnect', code, reason }));
    c.on('error', e => rec.log.push({ k: 'error', msg: String((e && (e.message || e.type)) || e) }));
    return rec;
  }
  if (typeof module !== 'undefined' && module.exports) module.exports = track;
  else root.track = track;
})(this);
