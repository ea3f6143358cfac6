// The types of the ws-server hub's JavaScript client (index.js).

/** What the client needs of a WebSocket: the browser's, or in Node the ws package's. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Ends the connection without a close handshake, where the implementation has it (ws does). */
  terminate?(): void;
}

/** A WebSocket constructor: `globalThis.WebSocket` in a browser, `ws`'s default export in Node. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A token, or where one comes from: called at every connection and whenever the hub asks for a fresh one. */
export type TokenSource = string | (() => string | Promise<string>);

/** The wait between connection attempts: uniform up to `initial` doubled per attempt, at most `max` (ms). */
export interface Backoff {
  initial: number;
  max: number;
}

export interface HubClientOptions {
  /** The WebSocket implementation; defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** The connection's token (a JWT), sent as the `token` query parameter. */
  token?: TokenSource;
  /** Defaults to 500 ms doubling up to 30 s. */
  backoff?: Backoff;
  /** Other URLs of the same hub, tried in turn after the first: each drop or failed attempt moves to the next. */
  servers?: string[];
  /** A `ping` envelope after this long (ms, default 25000)... */
  pingInterval?: number;
  /** ...and the connection is given up if nothing at all comes within this long after it (ms, default 10000). */
  pongTimeout?: number;
  /** A page visible again after being hidden this long (ms, default 30000) reconnects or checks its connection at once. */
  sleepThreshold?: number;
}

/** A message of a room, as the hub sent it. */
export interface HubMessage {
  type: "message";
  room: string;
  /** Its place in the room: 1, 2, 3, ... handed on once each, in order. */
  seq: number;
  /** The hub's id of the message. */
  id: string;
  /** Milliseconds since the Unix epoch. */
  time: number;
  sender: string;
  content?: string;
  data?: unknown;
}

export interface ErrorEnvelope {
  type?: "error";
  code: string;
  message: string;
  id?: string;
  room?: string;
  error?: unknown;
}

export interface Joined {
  type: "joined";
  room: string;
  /** The room's latest seq when joined. */
  seq: number;
  /** Names the room's numbering. */
  epoch: string;
}

export interface Presence {
  type: "presence";
  room: string;
  count: number;
  members: string[];
}

export interface Disconnected {
  /** The close code, if the connection was closed (1006: it failed). */
  code?: number;
  /** The handshake's HTTP status, where the WebSocket implementation tells it. */
  status?: number;
  reason: string;
  /** True when the client stopped for good: `close()`, a 401 or 403, a 4000-range close. */
  final: boolean;
  /** When not final, the wait (ms) before the next attempt. */
  delay?: number;
}

export interface HubEvents {
  connecting: { attempt: number };
  connected: {};
  disconnected: Disconnected;
  message: HubMessage;
  /** Messages `from` to `to` of `room` will not arrive. */
  gap: { type?: "gap"; room: string; from: number; to: number };
  /** A rejoin's replay is done; `complete: false` when the hub no longer held all that was missed. */
  recovered: { room: string; complete: boolean };
  /** The room's numbering started over (the server restarted, its history lost): what it holds now follows. */
  renumbered: { room: string; epoch: string };
  presence: Presence;
  member_joined: { type: "member_joined"; room: string; member: string };
  member_left: { type: "member_left"; room: string; member: string };
  /** A fresh token was taken: it expires then, in seconds since the Unix epoch. */
  refreshed: { type: "refreshed"; expires: number };
  /** Left a room; with `reason`, the hub took the client out of it. */
  left: { type: "left"; room: string; reason?: string };
  system: { type: "system"; content: string; time: number };
  error: ErrorEnvelope;
}

/** What the hub refused (its error envelope), or why the client gave a request up. */
export class HubError extends Error {
  constructor(envelope: ErrorEnvelope);
  readonly code: string;
  readonly envelope: ErrorEnvelope;
}

/** A delay for attempt `attempt` (from 0), with full jitter. */
export function backoffDelay(backoff: Backoff, attempt: number): number;

export class HubClient {
  constructor(url: string, options?: HubClientOptions);
  /** idle, connecting, connected, waiting (to reconnect) or closed. */
  readonly state: "idle" | "connecting" | "connected" | "waiting" | "closed";
  on<E extends keyof HubEvents>(event: E, listener: (value: HubEvents[E]) => void): this;
  off<E extends keyof HubEvents>(event: E, listener: (value: HubEvents[E]) => void): this;
  /** Starts connecting, and reconnecting until `close()` or a final refusal. */
  connect(): this;
  /** Closes the connection and stops; what was not acked is rejected. */
  close(): void;
  /**
   * Joins `room` now and after every reconnection, with a room token if
   * given; with `since`, the first join replays what the room holds after it.
   */
  join(room: string, options?: { token?: TokenSource; since?: number }): Promise<Joined>;
  leave(room: string): void;
  /** Resolves with the seq of the message's ack; rejects with a HubError. */
  publish(room: string, message: { content?: string; data?: unknown }): Promise<number>;
  presence(room: string): Promise<Presence>;
  /**
   * Calls `method` of the application's backend (the hub's rpc hook) with
   * `data` (made while connecting, sent once connected); resolves with its
   * result, rejects with a HubError (`refused`,
   * `not_offered`, `unavailable`, or `not_connected` when the connection
   * ends first: a call is never sent twice).
   */
  rpc<T = unknown>(method: string, data?: unknown): Promise<T>;
  /** The last seq of `room` handed on (0: none yet). */
  since(room: string): number;
}
