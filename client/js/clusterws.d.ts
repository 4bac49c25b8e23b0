// Types of clusterws.js, the browser client of clusterws-go, served next to
// it at <path>/clusterws.d.ts. Written by hand; keep it in step with the
// JSDoc of clusterws.js.

/** Where the connection stands; the 'state' event reports every change. */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** Where a channel's subscription stands. */
export type ChannelState = 'subscribing' | 'subscribed' | 'refused' | 'unsubscribed';

export interface ReconnectOptions {
  /** Consecutive failed attempts before the client gives up. default: 0, never */
  attempts?: number;
  /** First wait before reconnecting, ms; it doubles up to maxInterval, jittered. default: 500 */
  minInterval?: number;
  /** Longest wait between attempts, ms. default: 5000 */
  maxInterval?: number;
}

export interface Options {
  /** The WebSocket endpoint, e.g. 'ws://localhost:8080/ws'. default: the endpoint that served the module */
  url?: string;
  /** Connect in the constructor; otherwise call connect(). default: true */
  autoConnect?: boolean;
  /** Reconnect when a connection ends, except after disconnect() or a 1000 close from the server. default: true */
  autoReconnect?: boolean;
  autoReconnectOptions?: ReconnectOptions;
  /** Subscribe every channel again after a reconnect; false drops them when a connection ends. default: true */
  autoResubscribe?: boolean;
  /**
   * On channels with history: a channel subscribed again after a reconnect
   * first gets what it missed since its position, in order and exactly
   * once, before live publications; when the server cannot give all of it,
   * the client emits 'gap' and live publications follow. Needs the
   * protocol extension (nothing changes against a 3.x server).
   * default: false, live publications only
   */
  recover?: boolean;
}

/**
 * A place in a channel's history: the offset of a publication, counted
 * within an epoch; a new epoch means the server lost the channel's history.
 */
export interface Position {
  readonly offset: number;
  readonly epoch: string;
}

/** What the 'gap' event reports: a channel could not recover what it missed. */
export interface Gap {
  /** The channel's name. */
  channel: string;
  /** The channel's position before the reconnect: what came after it is partly lost. */
  since: Position;
  /** Where live publications continue from; null when the server keeps no history of the channel any more. */
  position: Position | null;
}

/** Why a request failed: the server's answer codes and the client's own (below 100). */
export declare const Codes: {
  /** The connection closed before the server answered (a publish may or may not have been delivered). */
  readonly CONNECTION_LOST: 1;
  /** The client stopped: disconnect(), attempts exhausted, a 1000 close from the server, or no autoReconnect. */
  readonly STOPPED: 2;
  /** The channel was unsubscribed before the server accepted it. */
  readonly UNSUBSCRIBED: 3;
  readonly BAD_REQUEST: 400;
  /** Refused by the server's OnSubscribe or OnPublish hook; the reason is the hook's error text. */
  readonly REFUSED: 403;
  /** A publish to a channel this client is not subscribed to. */
  readonly NOT_SUBSCRIBED: 409;
  readonly CHANNEL_TOO_LONG: 414;
  readonly TOO_MANY_CHANNELS: 429;
  /** A server hook panicked; the server closes the connection. */
  readonly INTERNAL: 500;
  /** Delivered locally, but the server's broker did not take the publish. */
  readonly UNAVAILABLE: 503;
};

/**
 * What every promise of the module rejects with (data JSON.stringify
 * cannot encode rejects with its TypeError instead).
 */
export declare class ClusterWSError extends Error {
  constructor(code: number, reason: string, channel?: string);
  readonly name: 'ClusterWSError';
  /** One of Codes. */
  code: number;
  reason: string;
  /** The channel concerned, if any. */
  channel?: string;
}

export declare class Channel {
  private constructor();
  readonly name: string;
  readonly state: ChannelState;
  /**
   * On a channel with history, the position of the last publication
   * delivered (or the later one a subscription was answered with); null
   * before any and without history. A publication at or before it in the
   * same epoch is dropped as a duplicate.
   */
  readonly position: Position | null;
  /**
   * Resolves once the server accepted the subscription (at once with a 3.x
   * server); rejects with a ClusterWSError when it refused, or when the
   * channel was unsubscribed or the client stopped first. Replaced by a new
   * promise whenever the channel is subscribed again after a reconnect.
   */
  readonly ready: Promise<Channel>;
  /** Sets the function called with every publish's data (null removes it). */
  watch(listener: ((data: any) => void) | null): this;
  /** Resolves once delivered by the server; rejects with a ClusterWSError. */
  publish(data: any): Promise<void>;
  /** Leaves the channel; resolves once the server confirmed, or at once when not connected. */
  unsubscribe(): Promise<void>;
}

export default class ClusterWS {
  /** Throws TypeError or RangeError for invalid options, SyntaxError for a URL WebSocket cannot use. */
  constructor(options?: Options);
  /** After every connection, once the config frame arrived and queued calls were sent. */
  on(event: 'connect', listener: () => void): this;
  /** When a connection that emitted 'connect' ends. */
  on(event: 'disconnect', listener: (code: number, reason: string) => void): this;
  /** A frame that is not JSON, or a ClusterWSError for a channel refused on resubscribe (not failed connections). */
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: 'state', listener: (state: ConnectionState) => void): this;
  /**
   * With recover: a channel subscribed again after a reconnect could not
   * get all it missed (the server's history window was exceeded or its
   * epoch changed). Comes before the publications after the gap.
   */
  on(event: 'gap', listener: (gap: Gap) => void): this;
  /** A server event; one listener per name. Server events named like the client's own (above) are not delivered. */
  on(event: string, listener: (data: any) => void): this;
  off(event: string): this;
  /** Sends now, or once connected. Throws JSON.stringify's TypeError for data it cannot encode. */
  send(event: string, data?: any): void;
  /** Subscribes now, or once connected; returns the existing channel of that name if any. */
  subscribe(name: string): Channel;
  getChannelByName(name: string): Channel | undefined;
  /** The current WebSocket's readyState: 0 also while waiting to reconnect, 3 once stopped. */
  getState(): number;
  readonly connectionState: ConnectionState;
  /** Starts again once stopped, or first with autoConnect false; otherwise does nothing. */
  connect(): void;
  /** Closes and stops: no reconnect; what waits rejects with code 2 and every channel is dropped. */
  disconnect(code?: number, reason?: string): void;
}
