// The JavaScript client of the ws-server hub (docs/protocol.md), for
// browsers and Node, one ES module with no dependency.
//
// A HubClient stays connected: after a drop it waits with exponential
// backoff and full jitter, and at once when the browser comes back online
// or the page becomes visible after a long sleep. It sees a connection that
// died without closing by the hub's `ping` envelope. On each reconnection
// it joins its rooms again with `since`, the last seq it handed on, holds
// what arrives until the room's `recovered`, and hands the application each
// message once, in seq order. A published message carries an id of the
// client's own and is sent again after a reconnection until acked, which the
// hub knows for a retry. Tokens come from a string or a function, called at
// every connection and whenever the hub asks for a fresh one.

/** Error codes after which a request is sent again later. */
const RETRIED = new Set(["unavailable", "rate_limited"]);

/** The close code of a connection whose token expired unrefreshed (docs/protocol.md). */
const TOKEN_EXPIRED = 4001;

/** A refused request: the hub's error envelope, or why the client gave up on it. */
export class HubError extends Error {
  /** @param {{code: string, message: string, id?: string}} envelope */
  constructor(envelope) {
    super(`${envelope.code}: ${envelope.message}`);
    this.name = "HubError";
    this.code = envelope.code;
    this.envelope = envelope;
  }
}

/** A delay for attempt `attempt` (from 0): uniform up to `initial` doubled per attempt, at most `max`. */
export function backoffDelay(backoff, attempt) {
  return Math.random() * Math.min(backoff.max, backoff.initial * 2 ** Math.min(attempt, 31));
}

/** A client id prefix: random, so that ids are unique per client across page loads. */
function idPrefix() {
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The handshake's HTTP status, where the WebSocket implementation tells it (Node's ws does). */
function refusedStatus(event) {
  const said = event?.message ?? event?.error?.message ?? "";
  const status = /Unexpected server response: (\d{3})/.exec(said);
  return status ? Number(status[1]) : undefined;
}

export class HubClient {
  #url;
  #options;
  #listeners = new Map();
  #socket = null;
  #state = "idle";
  #attempt = 0;
  #wake = null;
  #liveness = null;
  #heard = 0;
  #hiddenAt = 0;
  #prefix = idPrefix();
  #nextId = 0;
  /** Connection attempts so far: which URL is next. */
  #turn = 0;
  /**
   * room -> {since: the last seq handed on, epoch, held: what came while
   * recovering, by seq, recovering: replays asked for and not done,
   * complete, token, fresh: never joined yet, recovery: joins take since,
   * attempt, joinId, joining: the join promises to settle}
   */
  #rooms = new Map();
  /** id -> {envelope, resolve, reject, attempt} of messages not yet acked */
  #pending = new Map();
  /** id -> {room, resolve, reject} of the `presence` requests not yet answered, in order */
  #presence = new Map();
  /** id -> {resolve, reject} of the `rpc` calls not yet answered */
  #calls = new Map();
  #resendTimer = null;
  #browserHooks = [];

  /**
   * @param {string} url the hub's WebSocket URL, such as ws://127.0.0.1:8080/ws
   * @param {object} [options] see index.d.ts
   */
  constructor(url, options = {}) {
    this.#url = url;
    this.#options = {
      WebSocket: globalThis.WebSocket,
      token: undefined,
      backoff: { initial: 500, max: 30000 },
      pingInterval: 25000,
      pongTimeout: 10000,
      sleepThreshold: 30000,
      ...options,
    };
    if (!this.#options.WebSocket) {
      throw new TypeError("no WebSocket: pass one as the WebSocket option (in Node, the ws package's)");
    }
  }

  /** The connection's state: idle, connecting, connected, waiting (to reconnect) or closed. */
  get state() {
    return this.#state;
  }

  /** Calls `listener` with each event named `event`. */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return this;
  }

  /** Stops calling `listener` for `event`. */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
    return this;
  }

  #emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(value);
      } catch (error) {
        if (event === "error") throw error;
        this.#emit("error", { code: "listener", message: String(error), error });
      }
    }
  }

  /** Starts connecting (and reconnecting until `close()` or a final refusal). */
  connect() {
    if (this.#state !== "idle") return this;
    this.#watchBrowser();
    this.#open();
    return this;
  }

  /** Closes the connection (1000) and stops reconnecting; what was not acked is rejected. */
  close() {
    if (this.#state === "closed") return;
    this.#stop({ code: 1000, reason: "closed by the application", final: true });
  }

  /**
   * Joins `room`, now and after every reconnection; resolves with the
   * `joined` envelope. `options.token`: a room token, or a function that
   * returns one, fetched again when the hub asks for a fresh one.
   * `options.since`: the first join replays what the room holds after it
   * (without it, the first join starts from the room's latest message).
   */
  join(room, options = {}) {
    return new Promise((resolve, reject) => {
      const known = this.#rooms.get(room);
      if (known) return known.joining.push({ resolve, reject });
      const state = {
        since: options.since ?? 0,
        epoch: null,
        held: null,
        recovering: 0,
        complete: true,
        token: options.token,
        fresh: options.since === undefined,
        recovery: true,
        attempt: 0,
        joining: [{ resolve, reject }],
      };
      this.#rooms.set(room, state);
      if (this.#state === "connected") this.#sendJoin(room, state);
    });
  }

  /** Leaves `room`; its messages are no longer handed on. */
  leave(room) {
    const state = this.#rooms.get(room);
    if (!state) return;
    this.#rooms.delete(room);
    for (const { reject } of state.joining) reject(new HubError({ code: "left", message: `left room ${room}` }));
    this.#send({ type: "leave", room });
  }

  /**
   * Publishes `{content, data}` (either or both) to `room`; resolves with
   * the seq its ack carries, rejects with a HubError. Sent again with the
   * same id after a reconnection, and after `unavailable` or
   * `rate_limited`, until acked or refused for good.
   */
  publish(room, { content, data } = {}) {
    const id = `${this.#prefix}-${this.#nextId++}`;
    const envelope = { type: "message", room, id };
    if (content !== undefined) envelope.content = content;
    if (data !== undefined) envelope.data = data;
    return new Promise((resolve, reject) => {
      if (this.#state === "closed") return reject(new HubError({ code: "closed", message: "the client is closed" }));
      this.#pending.set(id, { envelope, resolve, reject, attempt: 0 });
      if (this.#state === "connected") this.#send(envelope);
    });
  }

  /**
   * Who is in `room` (joined, where its namespace answers presence):
   * `{room, count, members}`. Asked while connecting, it goes out once
   * connected.
   */
  presence(room) {
    return new Promise((resolve, reject) => {
      const id = `${this.#prefix}-p${this.#nextId++}`;
      this.#ask(this.#presence, { type: "presence", room, id }, { room, resolve, reject }, "presence");
    });
  }

  /**
   * Calls `method` of the application's backend (the hub's rpc hook,
   * docs/hooks.md) with `data`, if given; resolves with the backend's
   * result, rejects with a HubError (`refused`: the backend's reason). A
   * call is not sent again after a reconnection, since it may have been
   * made: one in flight when the connection ends is rejected. Made while
   * connecting, it goes out once connected.
   */
  rpc(method, data) {
    return new Promise((resolve, reject) => {
      const id = `${this.#prefix}-r${this.#nextId++}`;
      const envelope = { type: "rpc", method, id };
      if (data !== undefined) envelope.data = data;
      this.#ask(this.#calls, envelope, { resolve, reject }, "an rpc");
    });
  }

  /**
   * Sends `envelope`, a request of this connection alone, now if connected
   * or once connected if connecting, its answer awaited in `asked` by its
   * id; rejected without a connection on the way.
   */
  #ask(asked, envelope, awaiting, what) {
    if (this.#state !== "connected" && this.#state !== "connecting") {
      return awaiting.reject(new HubError({ code: "not_connected", message: `${what} needs a connection` }));
    }
    asked.set(envelope.id, { ...awaiting, envelope });
    if (this.#state === "connected") this.#send(envelope);
  }

  /** The last seq of `room` handed to the application (0: none yet). */
  since(room) {
    return this.#rooms.get(room)?.since ?? 0;
  }

  /** Sends `envelope` if the socket is open; else the next connection brings what is needed again. */
  #send(envelope) {
    if (this.#socket?.readyState !== 1) return;
    this.#socket.send(JSON.stringify(envelope));
  }

  async #token(source) {
    return typeof source === "function" ? await source() : source;
  }

  async #open() {
    this.#state = "connecting";
    this.#emit("connecting", { attempt: this.#attempt });
    let url;
    try {
      // Each attempt, the first after a drop included, goes to the next URL.
      const urls = [this.#url, ...(this.#options.servers ?? [])];
      url = new URL(urls[this.#turn++ % urls.length]);
      const token = await this.#token(this.#options.token);
      if (token) url.searchParams.set("token", token);
    } catch (error) {
      if (this.#state !== "connecting") return;
      this.#emit("error", { code: "no_token", message: String(error), error });
      return this.#retry({ code: undefined, reason: `no token: ${error}`, final: false });
    }
    if (this.#state !== "connecting") return;
    const socket = new this.#options.WebSocket(url.href);
    this.#socket = socket;
    let status;
    socket.onopen = () => this.#opened(socket);
    socket.onerror = (event) => {
      status ??= refusedStatus(event);
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#receive(event.data);
    };
    socket.onclose = (event) => {
      if (socket === this.#socket) this.#closed(event, status);
    };
  }

  /**
   * Open: the rooms joined again, then what was not acked sent again, in
   * order; then the client is `connected`, and what the application asks
   * goes out at once.
   */
  async #opened(socket) {
    if (socket !== this.#socket) return;
    const rooms = [...this.#rooms];
    for (const [, state] of rooms) {
      // What the last connection was recovering comes again in this one's replay.
      state.held = null;
      state.recovering = 0;
    }
    const joins = await Promise.all(rooms.map(([room, state]) => this.#joinEnvelope(room, state)));
    if (socket !== this.#socket) return;
    this.#state = "connected";
    this.#attempt = 0;
    rooms.forEach(([room, state], i) => this.#rooms.get(room) === state && this.#send(joins[i]));
    for (const [room, state] of this.#rooms) {
      // Joined while the tokens were fetched.
      if (!rooms.some(([joined]) => joined === room)) this.#sendJoin(room, state);
    }
    for (const { envelope } of this.#pending.values()) this.#send(envelope);
    // Asked while connecting: those of an attempt that failed were rejected.
    for (const { envelope } of [...this.#presence.values(), ...this.#calls.values()]) this.#send(envelope);
    this.#beat();
    this.#emit("connected", {});
  }

  async #sendJoin(room, state) {
    const envelope = await this.#joinEnvelope(room, state);
    if (this.#rooms.get(room) === state) this.#send(envelope);
  }

  /** The join of `room`: with `since` after the first, so that the replay brings what was missed. */
  async #joinEnvelope(room, state) {
    const envelope = { type: "join", room, id: `${this.#prefix}-j${this.#nextId++}` };
    state.joinId = envelope.id;
    if (!state.fresh && state.recovery) {
      envelope.since = state.since;
      state.held ??= new Map();
      state.recovering += 1;
    }
    if (state.token !== undefined) {
      try {
        envelope.token = await this.#token(state.token);
      } catch (error) {
        this.#emit("error", { code: "no_token", room, message: String(error), error });
      }
    }
    return envelope;
  }

  /** Every `pingInterval`, a ping; nothing at all heard within `pongTimeout` after it: the connection is dead. */
  #beat() {
    clearTimeout(this.#liveness);
    this.#liveness = setTimeout(() => this.#probe(), this.#options.pingInterval);
  }

  #probe() {
    const heard = this.#heard;
    this.#send({ type: "ping" });
    clearTimeout(this.#liveness);
    this.#liveness = setTimeout(() => {
      if (this.#heard !== heard) return this.#beat();
      this.#abandon("the server went silent");
    }, this.#options.pongTimeout);
  }

  /** Gives a connection up without waiting for its close, which may never come. */
  #abandon(reason) {
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      if (typeof socket.terminate === "function") socket.terminate();
      else socket.close();
    }
    this.#retry({ code: undefined, reason, final: false });
  }

  #closed(event, status) {
    this.#socket = null;
    const code = event.code;
    const reason = event.reason || (status ? `refused with HTTP ${status}` : `closed (${code})`);
    const refused = status === 401 || status === 403;
    // 4001: the token expired; a token function gives a fresh one, a string cannot.
    const expired = code === TOKEN_EXPIRED && typeof this.#options.token === "function";
    const final = refused || (code >= 4000 && code <= 4999 && !expired);
    if (final) return this.#stop({ code, status, reason, final: true });
    this.#retry({ code, status, reason, final: false });
  }

  /** The connection ended: told, and the next attempt after a backoff. */
  #retry(why) {
    clearTimeout(this.#liveness);
    this.#failAsked();
    const delay = backoffDelay(this.#options.backoff, this.#attempt);
    this.#attempt += 1;
    this.#state = "waiting";
    this.#emit("disconnected", { ...why, delay });
    clearTimeout(this.#wake);
    this.#wake = setTimeout(() => this.#open(), delay);
  }

  /** Stops for good: no reconnection, every pending request rejected. */
  #stop(why) {
    clearTimeout(this.#liveness);
    clearTimeout(this.#wake);
    clearTimeout(this.#resendTimer);
    const socket = this.#socket;
    this.#socket = null;
    if (socket && socket.readyState <= 1) socket.close(1000);
    for (const unhook of this.#browserHooks) unhook();
    this.#browserHooks = [];
    this.#state = "closed";
    const refusal = new HubError({ code: "closed", message: why.reason });
    for (const { reject } of this.#pending.values()) reject(refusal);
    this.#pending.clear();
    for (const state of this.#rooms.values()) for (const { reject } of state.joining.splice(0)) reject(refusal);
    this.#failAsked();
    this.#emit("disconnected", why);
  }

  /** The presence requests and rpc calls of a connection that ended, rejected. */
  #failAsked() {
    const refusal = new HubError({ code: "not_connected", message: "the connection ended" });
    for (const { reject } of [...this.#presence.values(), ...this.#calls.values()]) reject(refusal);
    this.#presence.clear();
    this.#calls.clear();
  }

  /** In a browser: at once when back online, or visible again after a long sleep. */
  #watchBrowser() {
    const hook = (target, event, listener) => {
      if (typeof target?.addEventListener !== "function") return;
      target.addEventListener(event, listener);
      this.#browserHooks.push(() => target.removeEventListener(event, listener));
    };
    hook(globalThis.window, "online", () => this.#revive());
    const document = globalThis.document;
    hook(document, "visibilitychange", () => {
      if (document.visibilityState === "hidden") {
        this.#hiddenAt = Date.now();
      } else if (this.#hiddenAt && Date.now() - this.#hiddenAt >= this.#options.sleepThreshold) {
        this.#revive();
      }
    });
  }

  /** Reconnects now if waiting; if connected, checks now that the connection lives. */
  #revive() {
    if (this.#state === "waiting") {
      clearTimeout(this.#wake);
      this.#open();
    } else if (this.#state === "connected") {
      this.#probe();
    }
  }

  #receive(text) {
    this.#heard += 1;
    let envelope;
    try {
      envelope = JSON.parse(text);
    } catch {
      return this.#emit("error", { code: "invalid_json", message: "the hub sent something that is not JSON" });
    }
    switch (envelope.type) {
      case "message":
        return this.#message(envelope);
      case "joined":
        return this.#joined(envelope);
      case "recovered":
        return this.#recovered(envelope);
      case "gap":
        return this.#gap(envelope);
      case "ack":
        return this.#acked(envelope);
      case "error":
        return this.#refused(envelope);
      case "refresh":
        return this.#refresh(envelope);
      case "presence":
        return this.#present(envelope);
      case "rpc":
        return this.#answered(envelope);
      case "left":
        return this.#left(envelope);
      case "pong":
        return;
      default:
        // system, refreshed, member_joined, member_left: as they come.
        this.#emit(envelope.type, envelope);
    }
  }

  /** A room's latest seq and epoch: another epoch, or a seq below what was handed on, is a new numbering. */
  #joined(envelope) {
    const state = this.#rooms.get(envelope.room);
    if (!state) return;
    const renumbered = (state.epoch !== null && state.epoch !== envelope.epoch) || envelope.seq < state.since;
    state.epoch = envelope.epoch;
    state.attempt = 0;
    if (state.fresh) {
      state.fresh = false;
      state.since = envelope.seq;
    } else if (renumbered && state.since > 0) {
      // What the old numbering had and the client missed is lost: take all the room holds now.
      state.since = 0;
      this.#sendJoin(envelope.room, state);
      this.#emit("renumbered", { room: envelope.room, epoch: envelope.epoch });
    }
    for (const { resolve } of state.joining.splice(0)) resolve(envelope);
  }

  #recovered(envelope) {
    const state = this.#rooms.get(envelope.room);
    if (!state || state.recovering === 0) return;
    state.recovering -= 1;
    state.complete = envelope.complete;
    if (state.recovering > 0) return;
    const entries = [...(state.held ?? new Map()).entries()].sort(([a], [b]) => a - b);
    state.held = null;
    for (const [, held] of entries) held.type === "gap" ? this.#gap(held) : this.#message(held);
    this.#emit("recovered", { room: envelope.room, complete: state.complete });
  }

  /** A message: held while its room recovers, dropped if handed on before, else handed on after any gap. */
  #message(message) {
    const state = this.#rooms.get(message.room);
    if (!state) return this.#emit("message", message);
    if (state.held) return void state.held.set(message.seq, message);
    if (message.seq <= state.since) return;
    const from = state.since + 1;
    state.since = message.seq;
    if (from < message.seq) this.#emit("gap", { room: message.room, from, to: message.seq - 1 });
    this.#emit("message", message);
  }

  /** Seqs the server will not send: held in their place while the room recovers, else told at once. */
  #gap(envelope) {
    const state = this.#rooms.get(envelope.room);
    if (state?.held) {
      if (!state.held.has(envelope.from)) state.held.set(envelope.from, envelope);
      return;
    }
    if (state) state.since = Math.max(state.since, envelope.to);
    this.#emit("gap", envelope);
  }

  #acked(envelope) {
    const pending = this.#pending.get(envelope.id);
    if (!pending) return;
    this.#pending.delete(envelope.id);
    pending.resolve(envelope.seq);
  }

  /** An error: about a message, a join or a presence of this client, or else told as it is. */
  #refused(envelope) {
    const pending = this.#pending.get(envelope.id);
    if (pending) return this.#refusedMessage(envelope, pending);
    for (const [room, state] of this.#rooms) {
      if (state.joinId === envelope.id) return this.#refusedJoin(envelope, room, state);
    }
    const asked = this.#presence.get(envelope.id) ?? this.#calls.get(envelope.id);
    if (asked) {
      this.#presence.delete(envelope.id);
      this.#calls.delete(envelope.id);
      return asked.reject(new HubError(envelope));
    }
    // A rate limit's refusal names no envelope: what was not acked goes again later.
    if (envelope.code === "rate_limited") this.#resendLater();
    this.#emit("error", envelope);
  }

  #refusedMessage(envelope, pending) {
    if (!RETRIED.has(envelope.code)) {
      this.#pending.delete(envelope.id);
      return pending.reject(new HubError(envelope));
    }
    const delay = backoffDelay(this.#options.backoff, pending.attempt);
    pending.attempt += 1;
    setTimeout(() => this.#pending.has(envelope.id) && this.#send(pending.envelope), delay);
  }

  #refusedJoin(envelope, room, state) {
    if (envelope.code === "not_offered" && state.recovering > 0) {
      // The room offers no recovery: joined without since from now on.
      state.recovery = false;
      state.recovering -= 1;
      if (state.recovering === 0) state.held = null;
      return this.#sendJoin(room, state);
    }
    if (RETRIED.has(envelope.code)) {
      if (state.recovering > 0) state.recovering -= 1;
      const delay = backoffDelay(this.#options.backoff, state.attempt);
      state.attempt += 1;
      return void setTimeout(() => this.#rooms.get(room) === state && this.#sendJoin(room, state), delay);
    }
    this.#rooms.delete(room);
    for (const { reject } of state.joining.splice(0)) reject(new HubError(envelope));
    this.#emit("error", envelope);
  }

  /** Sends every message not yet acked again, after a backoff. */
  #resendLater() {
    if (this.#resendTimer !== null) return;
    const delay = backoffDelay(this.#options.backoff, this.#attempt + 1);
    this.#resendTimer = setTimeout(() => {
      this.#resendTimer = null;
      for (const { envelope } of this.#pending.values()) this.#send(envelope);
    }, delay);
  }

  /** The hub asks for a fresh token: the connection's, or with `room` that room's room token. */
  async #refresh(envelope) {
    const state = envelope.room && this.#rooms.get(envelope.room);
    try {
      if (state && typeof state.token === "function") {
        const token = await this.#token(state.token);
        this.#send({ type: "join", room: envelope.room, token });
      } else if (!envelope.room && typeof this.#options.token === "function") {
        this.#send({ type: "refresh", token: await this.#options.token() });
      }
    } catch (error) {
      this.#emit("error", { code: "no_token", room: envelope.room, message: String(error), error });
    }
  }

  /** Who is in a room: the answer to the first `presence` request of that room. */
  #present(envelope) {
    for (const [id, asked] of this.#presence) {
      if (asked.room !== envelope.room) continue;
      this.#presence.delete(id);
      asked.resolve(envelope);
      break;
    }
    this.#emit("presence", envelope);
  }

  /** The backend's answer to an rpc of this client. */
  #answered(envelope) {
    const call = this.#calls.get(envelope.id);
    if (!call) return;
    this.#calls.delete(envelope.id);
    call.resolve(envelope.result);
  }

  #left(envelope) {
    const state = this.#rooms.get(envelope.room);
    if (envelope.reason && state) {
      this.#rooms.delete(envelope.room);
    }
    this.#emit("left", envelope);
  }
}
