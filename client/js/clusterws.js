// The browser client of clusterws-go: one ES module, no dependencies, no
// build step. The server serves it at <path>/clusterws.js (default
// /ws/clusterws.js); its types are at <path>/clusterws.d.ts.
//
//   import ClusterWS from '/ws/clusterws.js';
//   const socket = new ClusterWS({ url: 'ws://localhost:8080/ws' });
//   socket.on('chat', data => console.log(data));
//   socket.send('chat', 'hello');
//   const news = socket.subscribe('news').watch(data => console.log(data));
//   await news.ready;               // rejects with a ClusterWSError {code, reason}
//   await news.publish({ t: 'hi' }); // idem
//
// The API is the one of the ClusterWS 3.x client (clusterws-client-js). It
// offers the WebSocket subprotocol clusterws.v2; a server that selects it
// answers every subscribe, unsubscribe and publish, which settles their
// promises. Browsers fail the handshake with a server that ignores the
// offer (a ClusterWS 3.x server), so after such a failure the client tries
// again at once without it; on such a connection it speaks plain 3.x and
// the promises resolve as soon as the frame is sent: there is nothing to
// wait for.
//
// The extension is on only when the server both selects the subprotocol
// and says so in its config frame ("protocol":"clusterws.v2"): some servers
// echo any subprotocol offered, and the client then speaks 3.x to them.
//
// Delivery. Calls made while the client is not connected (before the first
// connection, or while it reconnects) are queued and sent, in call order,
// once it is; a publish whose connection closes before its answer rejects
// with code 1 (CONNECTION_LOST): it may or may not have been delivered.
// After a reconnect every channel is subscribed again (autoResubscribe);
// each one's `ready` is then a new promise, and a channel the server now
// refuses is dropped and reported through the client's 'error' event.
//
// Recovery. On a channel with history (server option WithHistory) every
// publication has a position, {offset, epoch}: channel.position is the
// last one delivered, and a publication at or before it in the same epoch
// is dropped as a duplicate. With the option recover, a channel subscribed
// again after a reconnect asks for what came after its position: the
// watcher gets every publication it missed, in order, exactly once, before
// live ones; when the server can no longer give them all (its history's
// window was exceeded, or the epoch changed) it gives none of them, the
// client emits 'gap' ({channel, since, position}) and live publications
// follow.

/** The subprotocol of the protocol extension. */
const SUBPROTOCOL = 'clusterws.v2';
const PING = 0x39; // '9', a binary frame of one byte
const PONG = new Uint8Array([0x41]); // 'A'
/** How long a connection may take to open and send its config frame. */
const CONNECT_TIMEOUT = 10000;
/** Client events that a server event of the same name must not trigger. */
const RESERVED = new Set(['connect', 'disconnect', 'error', 'state', 'gap']);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Why a request failed: the server's answer codes (HTTP-like) and the
 * client's own (below 100).
 * @readonly
 */
export const Codes = Object.freeze({
  /** The connection closed before the server answered. */
  CONNECTION_LOST: 1,
  /** The client stopped: disconnect(), reconnect attempts exhausted, a 1000 close from the server, or no autoReconnect. */
  STOPPED: 2,
  /** The channel was unsubscribed before the server accepted it. */
  UNSUBSCRIBED: 3,
  BAD_REQUEST: 400,
  /** The server's OnSubscribe or OnPublish hook refused; the reason is its error text. */
  REFUSED: 403,
  /** A publish to a channel this client is not subscribed to. */
  NOT_SUBSCRIBED: 409,
  CHANNEL_TOO_LONG: 414,
  TOO_MANY_CHANNELS: 429,
  /** A server hook panicked; the server closes the connection. */
  INTERNAL: 500,
  /** The server delivered the publish locally but its broker did not take it. */
  UNAVAILABLE: 503,
});

/**
 * The error every promise of this module rejects with (except for data
 * that JSON.stringify cannot encode, which rejects with its TypeError).
 * `code` is one of Codes; `channel` names the channel concerned, if any.
 */
export class ClusterWSError extends Error {
  /**
   * @param {number} code
   * @param {string} reason
   * @param {string} [channel]
   */
  constructor(code, reason, channel) {
    super(channel === undefined ? `${code} ${reason}` : `${channel}: ${code} ${reason}`);
    this.name = 'ClusterWSError';
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.reason = reason;
    /** @type {string | undefined} */
    this.channel = channel;
  }
}

// Internal methods shared by ClusterWS and Channel.
const PUBLISH = Symbol('publish');
const UNSUBSCRIBE = Symbol('unsubscribe');
const DELIVER = Symbol('deliver');
const RENEW = Symbol('renew');
const SETTLE = Symbol('settle');
const ACCEPTED = Symbol('accepted');
const HOLD = Symbol('hold');
const RELEASE = Symbol('release');
/** What a pending request's callback gets when its connection is gone. */
const LOST = Symbol('lost');

const noop = () => {};

/**
 * Runs a user callback; an exception is reported as uncaught, without
 * breaking the client.
 * @param {Function} fn
 * @param {unknown[]} args
 */
function call(fn, args) {
  try {
    fn(...args);
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

/**
 * A frame whose data is already JSON.
 * @param {string} kind
 * @param {string} name
 * @param {string} json
 */
function frame(kind, name, json) {
  return `{"#":[${JSON.stringify(kind)},${JSON.stringify(name)},${json}]}`;
}

/**
 * Encodes data now, so that a queued frame carries the value it had at the
 * call. What JSON has no value for (undefined, a function) is sent as null.
 * @param {unknown} data
 */
function toJSON(data) {
  return JSON.stringify(data) ?? 'null';
}

/**
 * The position of a publish frame or an answer, frozen, or null when pos
 * is not one.
 * @param {any} pos
 * @returns {Position | null}
 */
function toPosition(pos) {
  if (pos === null || typeof pos !== 'object') return null;
  const { offset, epoch } = pos;
  if (!Number.isSafeInteger(offset) || offset < 0 || typeof epoch !== 'string' || epoch === '') return null;
  return Object.freeze({ offset, epoch });
}

/** The endpoint next to this module: http://h/ws/clusterws.js → ws://h/ws. */
function defaultURL() {
  const u = new URL('.', import.meta.url);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = u.pathname.replace(/\/$/, '');
  return u.href;
}

/**
 * @typedef {'connecting' | 'connected' | 'reconnecting' | 'disconnected'} ConnectionState
 * @typedef {'subscribing' | 'subscribed' | 'refused' | 'unsubscribed'} ChannelState
 * @typedef {{ attempts?: number, minInterval?: number, maxInterval?: number }} ReconnectOptions
 * @typedef {{ url?: string, autoConnect?: boolean, autoReconnect?: boolean,
 *   autoReconnectOptions?: ReconnectOptions, autoResubscribe?: boolean, recover?: boolean }} Options
 * @typedef {{ readonly offset: number, readonly epoch: string }} Position
 * @typedef {{ channel: string, since: Position, position: Position | null }} Gap
 * @typedef {(answer: { code: number, reason: string } | null | typeof LOST, body?: any) => void} Answered
 */

/**
 * One subscription, returned by ClusterWS.subscribe. Publishes to it reach
 * the function given to watch.
 */
export class Channel {
  /** @type {ClusterWS} */ #client;
  /** @type {string} */ #name;
  /** @type {((data: any) => void) | null} */ #listener = null;
  /** @type {ChannelState} */ #state = 'subscribing';
  /** @type {((ch: Channel) => void) | null} */ #resolve = null;
  /** @type {((e: Error) => void) | null} */ #reject = null;
  #ready = this.#pending();
  #accepted = false;
  /** @type {Position | null} the last publication delivered, or where the server said the channel is */
  #position = null;
  /** @type {[any, Position | null][] | null} publications held back until a recovery's answer */
  #held = null;

  /**
   * @param {ClusterWS} client
   * @param {string} name
   */
  constructor(client, name) {
    this.#client = client;
    this.#name = name;
  }

  /** The channel's name. */
  get name() {
    return this.#name;
  }

  /** Where the subscription stands. @returns {ChannelState} */
  get state() {
    return this.#state;
  }

  /**
   * The channel's position, on a channel with history: that of the last
   * publication delivered to the watcher, or the one the server answered a
   * subscription with when later. Null before any, and on a channel
   * without history. Offsets count publications within an epoch; a new
   * epoch means the server lost the channel's history. Offsets beyond
   * 2^53 are not supported.
   * @returns {Position | null}
   */
  get position() {
    return this.#position;
  }

  /**
   * Resolves to this channel once the server has accepted the subscription
   * (at once when sent, with a 3.x server); rejects with a ClusterWSError
   * when it refused, or when the channel was unsubscribed or the client
   * stopped first. A new promise replaces it whenever the client subscribes
   * the channel again after a reconnect. Its rejection is never reported
   * as unhandled: a refusal on resubscribe goes to the client's 'error'
   * event instead.
   * @returns {Promise<Channel>}
   */
  get ready() {
    return this.#ready;
  }

  /**
   * Sets the function called with the data of every publish to the
   * channel, replacing any previous one (null removes it).
   * @param {((data: any) => void) | null} fn
   * @returns {this}
   */
  watch(fn) {
    if (fn !== null && typeof fn !== 'function') throw new TypeError('ClusterWS: watch needs a function');
    this.#listener = fn;
    return this;
  }

  /**
   * Publishes data (anything JSON.stringify encodes) to every subscriber
   * of the channel, this client included. Resolves once the server has
   * delivered it (and handed it to its broker); rejects with a
   * ClusterWSError: 403 refused by the server, 409 not subscribed, 503 the
   * broker did not take it (local subscribers got it), 1 the connection
   * closed first, 2 the client stopped first.
   * @param {any} data
   * @returns {Promise<void>}
   */
  publish(data) {
    return this.#client[PUBLISH](this, data);
  }

  /**
   * Leaves the channel: its watcher gets nothing more and it is not
   * subscribed again on reconnect. Resolves once the server confirmed (at
   * once when not connected: the next connection starts without it).
   * @returns {Promise<void>}
   */
  unsubscribe() {
    return this.#client[UNSUBSCRIBE](this);
  }

  /**
   * Delivers a publication, unless it is held back or a duplicate.
   * @param {any} data
   * @param {Position | null} pos
   */
  [DELIVER](data, pos) {
    if (this.#held) {
      this.#held.push([data, pos]);
      return;
    }
    if (pos) {
      const last = this.#position;
      if (last && last.epoch === pos.epoch && pos.offset <= last.offset) return; // had it
      this.#position = pos;
    }
    if (this.#listener) call(this.#listener, [data]);
  }

  /** Holds publications back until RELEASE: a recovery is being asked. */
  [HOLD]() {
    this.#held = [];
  }

  /**
   * Delivers what was held back, then moves the position up to pos, where
   * the server said the subscription starts.
   * @param {Position | null} pos
   */
  [RELEASE](pos) {
    const held = this.#held ?? [];
    this.#held = null;
    for (const [data, p] of held) this[DELIVER](data, p);
    const last = this.#position;
    if (pos && !(last && last.epoch === pos.epoch && last.offset >= pos.offset)) this.#position = pos;
    else if (!pos) this.#position = null; // the server keeps no history of it now
  }

  /**
   * A new ready, whose rejection is never reported as unhandled.
   * @returns {Promise<Channel>}
   */
  #pending() {
    /** @type {Promise<Channel>} */
    const p = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    p.catch(noop);
    return p;
  }

  /** Starts a new subscription attempt: a pending ready, unless one is. */
  [RENEW]() {
    this.#state = 'subscribing';
    this.#held = null; // asked again on the next connection
    if (!this.#resolve) this.#ready = this.#pending();
  }

  /**
   * @param {ChannelState} state
   * @param {Error} [err] rejects a pending ready
   */
  [SETTLE](state, err) {
    this.#state = state;
    if (state === 'subscribed') this.#accepted = true;
    else this.#held = null;
    const resolve = this.#resolve, reject = this.#reject;
    this.#resolve = this.#reject = null;
    if (err) reject?.(err);
    else resolve?.(this);
  }

  /** Whether the server has accepted this channel before. */
  get [ACCEPTED]() {
    return this.#accepted;
  }
}

/**
 * A connection to a clusterws-go (or ClusterWS) server that reconnects by
 * itself.
 *
 * Events (on): 'connect' after every connection, once the server's config
 * frame has arrived and queued calls have been sent; 'disconnect' (code,
 * reason) when a connection that had emitted 'connect' ends, whoever ended
 * it; 'error' (Error) for a frame that is not JSON, or a channel the server
 * refused to subscribe again after a reconnect (a ClusterWSError with
 * `channel` set; the channel is dropped), not for failed connections,
 * which 'state' and 'disconnect' report; 'state'
 * (ConnectionState) whenever connectionState changes; 'gap' ({channel,
 * since, position}), with the option recover, when a channel subscribed
 * again after a reconnect could not get what it missed since its position
 * `since` (the server's history no longer holds all of it, or lost it: a
 * new epoch), before the publications that follow the gap, from
 * `position` (null when the server keeps no history of the channel any
 * more); any other name is a server event, with its data. Server events
 * named like the client's own are not delivered.
 */
export default class ClusterWS {
  /** @type {Required<Omit<Options, 'autoReconnectOptions'>> & { autoReconnectOptions: Required<ReconnectOptions> }} */
  #opts;
  /** @type {WebSocket | null} */ #ws = null;
  /** True once the current connection's config frame is in and the queue sent. */
  #live = false;
  /** Whether the current WebSocket offered no subprotocol. */
  #plain = false;
  /**
   * Whether a connection of this client had the extension: the server
   * speaks it, so a failed handshake is a network or server failure, not a
   * 3.x server, and the subprotocol is kept (without it a reconnect would
   * silently lose recovery).
   */
  #spoke = false;
  /** Whether the current WebSocket has opened. */
  #opened = false;
  #ext = false;
  #binary = false;
  #ping = 0;
  /** @type {ConnectionState} */ #state = 'disconnected';
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} reconnect wait or connect timeout */
  #timer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #watchdog;
  /** @type {Map<string, Function>} */ #listeners = new Map();
  /** @type {Map<string, Channel>} */ #channels = new Map();
  /** @type {{ run: () => void, fail?: (e: Error) => void }[]} calls waiting for a connection */
  #queue = [];
  /** @type {Map<number, Answered>} */
  #pending = new Map();
  #nextID = 1;

  /**
   * Connects at once unless autoConnect is false. Throws a TypeError or
   * RangeError for invalid options, and the WebSocket constructor's
   * SyntaxError for a URL it cannot use.
   * @param {Options} [options]
   *   url: the endpoint, e.g. 'ws://localhost:8080/ws'; default: the one
   *   that served this module. autoReconnect: reconnect after a connection
   *   ends, except after disconnect() or a 1000 close from the server;
   *   default true. autoReconnectOptions: attempts (consecutive failures
   *   before giving up; default 0, never), minInterval and maxInterval
   *   (ms; the wait doubles from min up to max, jittered; defaults 500 and
   *   5000). autoResubscribe: subscribe the channels again after a
   *   reconnect; default true (false drops them when a connection ends).
   *   recover: on channels with history, a channel subscribed again after
   *   a reconnect first gets what it missed since its position, in order
   *   and exactly once, or the client emits 'gap' when the server cannot
   *   give all of it; default false (live publications only). It needs
   *   the protocol extension: against a 3.x server it does nothing.
   */
  constructor({
    url = defaultURL(),
    autoConnect = true,
    autoReconnect = true,
    autoReconnectOptions: { attempts = 0, minInterval = 500, maxInterval = 5000 } = {},
    autoResubscribe = true,
    recover = false,
  } = {}) {
    if (typeof url !== 'string' || url === '') throw new TypeError('ClusterWS: url must be a non-empty string');
    if (!(Number.isInteger(attempts) && attempts >= 0)) {
      throw new RangeError(`ClusterWS: autoReconnectOptions.attempts must be an integer >= 0 (got ${attempts})`);
    }
    if (!(minInterval > 0 && maxInterval >= minInterval)) {
      throw new RangeError(`ClusterWS: autoReconnectOptions need 0 < minInterval <= maxInterval (got ${minInterval}, ${maxInterval})`);
    }
    this.#opts = {
      url, autoConnect, autoReconnect, autoReconnectOptions: { attempts, minInterval, maxInterval },
      autoResubscribe, recover: recover === true,
    };
    if (autoConnect) this.connect();
  }

  /**
   * Sets the listener of an event, replacing any previous one (one per
   * name, as in the 3.x client).
   * @param {string} event
   * @param {(...args: any[]) => void} fn
   * @returns {this}
   */
  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('ClusterWS: on needs a function');
    this.#listeners.set(event, fn);
    return this;
  }

  /**
   * Removes the listener of an event.
   * @param {string} event
   * @returns {this}
   */
  off(event) {
    this.#listeners.delete(event);
    return this;
  }

  /**
   * Sends an event with data (anything JSON.stringify encodes) to the
   * server, now or, when not connected, once connected. Throws
   * JSON.stringify's TypeError for data it cannot encode.
   * @param {string} event
   * @param {any} [data]
   */
  send(event, data) {
    const f = frame('e', event, toJSON(data));
    this.#whenLive({ run: () => this.#write(f) });
  }

  /**
   * Subscribes to a channel, now or once connected, and returns it; the
   * channel already subscribed under that name if there is one.
   * @param {string} name
   * @returns {Channel}
   */
  subscribe(name) {
    let ch = this.#channels.get(name);
    if (ch) return ch;
    ch = new Channel(this, name);
    this.#channels.set(name, ch);
    // Not live: the next connection subscribes every channel of the map.
    if (this.#live) this.#subscribeOnServer(ch);
    return ch;
  }

  /**
   * The subscribed (or subscribing) channel of that name.
   * @param {string} name
   * @returns {Channel | undefined}
   */
  getChannelByName(name) {
    return this.#channels.get(name);
  }

  /**
   * The readyState of the current WebSocket: 0 connecting (also while
   * waiting to reconnect), 1 open, 2 closing, 3 closed (stopped).
   * @returns {number}
   */
  getState() {
    if (this.#ws) return this.#ws.readyState;
    return this.#state === 'disconnected' ? 3 : 0;
  }

  /**
   * 'connecting' until the first connection, 'connected', 'reconnecting'
   * while a lost connection is being replaced, 'disconnected' once stopped.
   * The 'state' event reports every change.
   * @returns {ConnectionState}
   */
  get connectionState() {
    return this.#state;
  }

  /**
   * Starts connecting: only needed with autoConnect false, or to start
   * again once the client has stopped. Does nothing otherwise.
   */
  connect() {
    if (this.#state !== 'disconnected') return;
    this.#attempt = 0;
    this.#open();
    this.#setState('connecting');
  }

  /**
   * Closes the connection and stops the client: no reconnect. Publishes
   * awaiting their answer reject with code 1 (CONNECTION_LOST), queued ones
   * and channels not yet accepted with code 2 (STOPPED); queued events are
   * dropped, and so is every channel. 'disconnect' gets code and reason.
   * @param {number} [code] 1000 or 3000–4999; default 1000
   * @param {string} [reason]
   */
  disconnect(code = 1000, reason = '') {
    const ws = this.#ws;
    if (ws) {
      ws.close(code, reason); // throws for a code the browser does not allow, before anything changes
      this.#drop(ws, code, reason, true);
    } else {
      this.#stop();
    }
  }

  /**
   * Opens a WebSocket, which becomes live once its config frame arrives.
   * @param {boolean} [plain] offer no subprotocol
   */
  #open(plain = false) {
    const ws = new WebSocket(this.#opts.url, plain ? [] : [SUBPROTOCOL]);
    ws.binaryType = 'arraybuffer';
    this.#plain = plain;
    this.#opened = false;
    ws.onopen = () => { this.#opened = true; };
    ws.onmessage = e => this.#receive(ws, e.data);
    ws.onclose = e => this.#drop(ws, e.code, e.reason, e.code === 1000);
    this.#ws = ws;
    this.#timer = setTimeout(() => this.#drop(ws, 4000, 'no config frame in time', false), CONNECT_TIMEOUT);
  }

  /**
   * @param {WebSocket} ws
   * @param {string | ArrayBuffer} data
   */
  #receive(ws, data) {
    if (typeof data !== 'string') {
      const bytes = new Uint8Array(data);
      if (bytes.length === 1 && bytes[0] === PING) {
        ws.send(PONG);
        this.#resetWatchdog();
        return;
      }
      data = decoder.decode(bytes);
    }
    let kind, name, body, meta;
    try {
      [kind, name, body, meta] = JSON.parse(data)['#'];
    } catch (e) {
      this.#emit('error', e);
      return;
    }
    switch (kind) {
      case 'e':
        if (!RESERVED.has(name)) this.#emit(name, body);
        break;
      case 'p':
        this.#channels.get(name)?.[DELIVER](body, toPosition(meta));
        break;
      case 's':
        this.#system(name, body);
        break;
    }
  }

  /**
   * System frames from the server. Unknown ones are ignored, so that newer
   * servers may add some.
   * @param {string} name
   * @param {any} body
   */
  #system(name, body) {
    switch (name) {
      case 'c':
        this.#configure(body ?? {});
        break;
      case 'a': {
        const done = this.#pending.get(body?.id);
        if (!done) return;
        this.#pending.delete(body.id);
        done(body.error ? { code: Number(body.error.code), reason: String(body.error.reason ?? '') } : null, body);
        break;
      }
    }
  }

  /** @param {{ ping?: number, binary?: boolean, protocol?: string }} config */
  #configure({ ping, binary, protocol }) {
    if (this.#live) return;
    clearTimeout(this.#timer);
    // Both: a server may echo a subprotocol it does not speak.
    this.#ext = this.#ws?.protocol === SUBPROTOCOL && protocol === SUBPROTOCOL;
    this.#spoke ||= this.#ext;
    this.#binary = binary === true;
    this.#ping = typeof ping === 'number' && ping > 0 ? ping : 0;
    this.#resetWatchdog();
    this.#attempt = 0;
    this.#live = true;
    for (const ch of this.#channels.values()) this.#subscribeOnServer(ch);
    const queue = this.#queue;
    this.#queue = [];
    for (const q of queue) q.run();
    this.#setState('connected');
    this.#emit('connect');
  }

  /** The server is dead when no ping comes within 2×ping+100 ms. */
  #resetWatchdog() {
    clearTimeout(this.#watchdog);
    const ws = this.#ws;
    if (this.#ping > 0 && ws) {
      this.#watchdog = setTimeout(() => this.#drop(ws, 4001, 'did not get pings', false), 2 * this.#ping + 100);
    }
  }

  /**
   * Runs q now if connected, else once connected.
   * @param {{ run: () => void, fail?: (e: Error) => void }} q
   */
  #whenLive(q) {
    if (this.#live) q.run();
    else this.#queue.push(q);
  }

  /** @param {string} text a frame */
  #write(text) {
    this.#ws?.send(this.#binary ? encoder.encode(text) : text);
  }

  /**
   * Sends a request of the extension; done gets the answer's error, null
   * for ok, or LOST when the connection ended first, and the answer.
   * @param {string} name 's', 'u' or 'p'
   * @param {string} channel
   * @param {string} more JSON members to add ('' or ',"k":v…')
   * @param {Answered} done
   */
  #request(name, channel, more, done) {
    const id = this.#nextID++;
    this.#pending.set(id, done);
    this.#write(frame('s', name, `{"id":${id},"channel":${JSON.stringify(channel)}${more}}`));
  }

  /** @param {Channel} ch */
  #subscribeOnServer(ch) {
    const name = ch.name;
    if (!this.#ext) {
      this.#write(frame('s', 's', JSON.stringify(name)));
      ch[SETTLE]('subscribed');
      return;
    }
    // With recover, a channel that has a position asks for what came after
    // it, and holds publications back until the answer says whether it
    // got them all (offset 0, nothing published yet, cannot be asked for:
    // the answer's position tells whether anything came meanwhile).
    const since = this.#opts.recover ? ch.position : null;
    const more = since && since.offset > 0 ? `,"since":${JSON.stringify(since)}` : '';
    if (since) ch[HOLD]();
    this.#request('s', name, more, (answer, body) => {
      if (answer === LOST || this.#channels.get(name) !== ch) return; // resubscribed later, or gone
      if (answer === null) {
        const pos = toPosition(body?.position);
        const moved = !pos || pos.epoch !== since?.epoch || pos.offset !== since.offset;
        if (since && body?.recovered !== true && moved) this.#emit('gap', { channel: name, since, position: pos });
        ch[RELEASE](pos);
        ch[SETTLE]('subscribed');
        return;
      }
      const err = new ClusterWSError(answer.code, answer.reason, name);
      const again = ch[ACCEPTED];
      this.#channels.delete(name);
      ch[SETTLE]('refused', err);
      if (again) this.#emit('error', err);
    });
  }

  /**
   * @param {Channel} ch
   * @param {any} data
   * @returns {Promise<void>}
   */
  [PUBLISH](ch, data) {
    const name = ch.name;
    const notSubscribed = () => new ClusterWSError(Codes.NOT_SUBSCRIBED, 'publish to a channel the socket is not subscribed to', name);
    if (this.#channels.get(name) !== ch) return Promise.reject(notSubscribed());
    let json;
    try {
      json = toJSON(data);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#whenLive({
        run: () => {
          if (this.#channels.get(name) !== ch) {
            reject(notSubscribed());
          } else if (!this.#ext) {
            this.#write(frame('p', name, json));
            resolve();
          } else {
            this.#request('p', name, `,"data":${json}`, answer => {
              if (answer === LOST) reject(new ClusterWSError(Codes.CONNECTION_LOST, 'connection lost', name));
              else if (answer) reject(new ClusterWSError(answer.code, answer.reason, name));
              else resolve();
            });
          }
        },
        fail: reject,
      });
    });
  }

  /**
   * @param {Channel} ch
   * @returns {Promise<void>}
   */
  [UNSUBSCRIBE](ch) {
    const name = ch.name;
    if (this.#channels.get(name) !== ch) return Promise.resolve();
    this.#channels.delete(name);
    ch[SETTLE]('unsubscribed', new ClusterWSError(Codes.UNSUBSCRIBED, 'unsubscribed', name));
    if (!this.#live) return Promise.resolve(); // the next connection starts without it
    if (!this.#ext) {
      this.#write(frame('s', 'u', JSON.stringify(name)));
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.#request('u', name, '', answer => {
        if (answer && answer !== LOST) reject(new ClusterWSError(answer.code, answer.reason, name));
        else resolve(); // the server forgot it with the connection
      });
    });
  }

  /**
   * Ends ws as the current connection, then reconnects or stops.
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   * @param {boolean} final stop instead of reconnecting
   */
  #drop(ws, code, reason, final) {
    if (ws !== this.#ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws.readyState <= WebSocket.OPEN) ws.close(code, reason);
    this.#ws = null;
    clearTimeout(this.#timer);
    clearTimeout(this.#watchdog);
    const wasLive = this.#live;
    this.#live = false;
    const pending = this.#pending;
    this.#pending = new Map();
    for (const done of pending.values()) done(LOST);
    if (!final && !this.#opened && !this.#plain && !this.#spoke) {
      // Browsers fail the handshake with a server that ignores the
      // subprotocol offered (a 3.x server): try again at once without.
      this.#open(true);
      return;
    }
    if (wasLive) {
      for (const ch of this.#channels.values()) {
        if (this.#opts.autoResubscribe) ch[RENEW]();
        else ch[SETTLE]('unsubscribed', new ClusterWSError(Codes.CONNECTION_LOST, 'connection lost', ch.name));
      }
      if (!this.#opts.autoResubscribe) this.#channels.clear();
    }
    // Decided before 'disconnect', which then sees the new connectionState
    // and may still call disconnect() to stop a reconnect.
    const { attempts, minInterval, maxInterval } = this.#opts.autoReconnectOptions;
    if (final || !this.#opts.autoReconnect || (attempts > 0 && this.#attempt >= attempts)) {
      this.#stop();
    } else {
      // Jittered exponential backoff: min doubled per failed attempt,
      // capped at max, then between half and all of it (never under min).
      this.#attempt++;
      const d = Math.min(maxInterval, minInterval * 2 ** (this.#attempt - 1));
      this.#timer = setTimeout(() => this.#open(), Math.max(minInterval, d / 2 + (Math.random() * d) / 2));
      this.#setState('reconnecting');
    }
    if (wasLive) this.#emit('disconnect', code, reason);
  }

  /** Stops for good: fails what waits, drops every channel. */
  #stop() {
    clearTimeout(this.#timer);
    const stopped = () => new ClusterWSError(Codes.STOPPED, 'client stopped');
    const queue = this.#queue;
    this.#queue = [];
    for (const q of queue) q.fail?.(stopped());
    const channels = [...this.#channels.values()];
    this.#channels.clear();
    for (const ch of channels) ch[SETTLE]('unsubscribed', new ClusterWSError(Codes.STOPPED, 'client stopped', ch.name));
    this.#setState('disconnected');
  }

  /** @param {ConnectionState} state */
  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit('state', state);
  }

  /**
   * @param {string} event
   * @param {...any} args
   */
  #emit(event, ...args) {
    const fn = this.#listeners.get(event);
    if (fn) call(fn, args);
  }
}
