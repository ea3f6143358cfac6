// What the suite shares: the real ws-server binary on a free port, a TCP
// proxy the test controls, a redis-server of the test's own, signed tokens,
// and waits for a client's events, each within a generous limit.

import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { HubClient } from "../index.js";

/** Generous: a wait for an event, never a measure of speed. */
export const PATIENCE = 30_000;

/** The binary under test: the Rust test passes its path. */
const BIN = process.env.WS_SERVER_BIN;

/** Within PATIENCE, or rejects saying what did not come. */
export function patiently(promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), PATIENCE);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Starts `ws-server` on a free port with `flags`; resolves once it says where it listens. */
export async function startServer(flags = []) {
  if (!BIN) throw new Error("WS_SERVER_BIN names the ws-server binary (cargo test -p ws-server --test js_client sets it)");
  const child = spawn(BIN, ["--listen", "127.0.0.1:0", ...flags], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: "info" },
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let log = "";
  const listening = new Promise((resolve, reject) => {
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const said = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
      if (said) resolve(Number(said[1]));
    });
    exited.then((code) => reject(new Error(`ws-server exited (${code}) before listening:\n${log}`)));
  });
  const port = await patiently(listening, "ws-server to listen");
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    /** Stops it (SIGTERM: it closes every connection) and waits for its exit. */
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await patiently(exited, "ws-server to exit");
    },
  };
}

/**
 * A TCP proxy to `port` on 127.0.0.1. `drop()` closes every connection
 * through it; `blackhole()` stops forwarding bytes of the connections open
 * now and closes nothing; `target` may change, for the next connections,
 * and while `refusing` they are closed at once.
 */
export async function startProxy(port) {
  const pairs = new Set();
  const proxy = { target: port, connections: 0, refusing: false };
  const server = net.createServer((client) => {
    if (proxy.refusing) return client.destroy();
    proxy.connections += 1;
    const upstream = net.connect(proxy.target, "127.0.0.1");
    const pair = { client, upstream, up: true, down: true };
    pairs.add(pair);
    client.on("data", (bytes) => pair.up && upstream.write(bytes));
    upstream.on("data", (bytes) => pair.down && client.write(bytes));
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of [client, upstream]) {
      socket.on("close", end);
      socket.on("error", end);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.url = `ws://127.0.0.1:${server.address().port}/ws`;
  proxy.drop = () => {
    for (const { client, upstream } of pairs) {
      client.destroy();
      upstream.destroy();
    }
  };
  /** Stops the bytes of the open connections: to the server (`up`), to the client (`down`), or both. */
  proxy.blackhole = ({ up = true, down = true } = {}) => {
    for (const pair of pairs) {
      pair.up &&= !up;
      pair.down &&= !down;
    }
  };
  proxy.close = () => {
    proxy.drop();
    return new Promise((resolve) => server.close(resolve));
  };
  return proxy;
}

/**
 * A redis-server of the test's own on a free port, without persistence, as
 * the Rust cluster tests start it; `null` when it is not installed, unless
 * WS_REQUIRE_REDIS=1 makes that a failure.
 */
export async function startRedis() {
  if (spawnSync("redis-server", ["--version"]).error) {
    const why = "the cluster tests need redis-server (apt-get install redis-server)";
    if (process.env.WS_REQUIRE_REDIS === "1") throw new Error(`WS_REQUIRE_REDIS=1, but ${why}`);
    return null;
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "ws-client-redis-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
  let child, exited;
  const start = async () => {
    child = spawn("redis-server", args, { stdio: "ignore" });
    exited = new Promise((resolve) => child.once("exit", resolve));
    await patiently(answersPing(port, exited), "redis-server to answer PING");
  };
  const kill = async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}/`,
    /** Kills it outright: whatever it held is gone. */
    kill,
    /** Starts it again, empty, on the same port. */
    restart: start,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once redis on `port` answers PING; rejects if it exits first. */
async function answersPing(port, exited) {
  let gone = false;
  exited.then(() => (gone = true));
  for (;;) {
    if (gone) throw new Error("redis-server exited");
    const pong = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
      socket.once("data", (bytes) => {
        socket.destroy();
        resolve(String(bytes));
      });
      socket.once("error", () => resolve(""));
    });
    if (pong.startsWith("+PONG")) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** `claims` signed with `secret`: an HS256 JWT. */
export function sign(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

/** Seconds since the Unix epoch, `offset` from now. */
export function at(offset) {
  return Math.floor(Date.now() / 1000) + offset;
}

/** Every event a client emits, recorded, with waits for what is to come. */
export class Recorder {
  static EVENTS = [
    "connecting",
    "connected",
    "disconnected",
    "message",
    "gap",
    "recovered",
    "renumbered",
    "presence",
    "member_joined",
    "member_left",
    "refreshed",
    "left",
    "error",
  ];

  log = [];
  #waiters = new Set();

  constructor(client) {
    for (const name of Recorder.EVENTS) {
      client.on(name, (value) => {
        this.log.push({ name, value });
        for (const waiter of this.#waiters) waiter();
      });
    }
  }

  /** The values of the events named `name`, in order. */
  of(name) {
    return this.log.filter((e) => e.name === name).map((e) => e.value);
  }

  /** The contents of the messages of `room`, in the order handed on. */
  said(room) {
    return this.of("message")
      .filter((m) => m.room === room)
      .map((m) => m.content);
  }

  /** Resolves with what `check` returns once it is truthy, now or after a later event. */
  until(check, what) {
    let waiter;
    const met = new Promise((resolve) => {
      waiter = () => {
        const value = check();
        if (value) resolve(value);
      };
      this.#waiters.add(waiter);
      waiter();
    });
    const names = () => this.log.map((e) => e.name).join(", ");
    return patiently(met, `${what} (events so far: ${names()})`).finally(() => this.#waiters.delete(waiter));
  }

  /** The `n`th event named `name` (from 1). */
  nth(name, n) {
    return this.until(() => this.of(name)[n - 1], `${name} #${n}`);
  }

  /** The first event named `name` whose value `predicate` holds for. */
  find(name, predicate) {
    return this.until(() => this.of(name).find(predicate), `a matching ${name}`);
  }

  /** Once the messages of `room` say `contents`, in that order. */
  saying(room, contents) {
    const expected = JSON.stringify(contents);
    return this.until(() => this.said(room).length >= contents.length, `${room} to say ${expected}`);
  }
}

/** A client of `url` with test-sized timings, its recorder, connected. */
export function client(url, options = {}) {
  const hub = new HubClient(url, {
    WebSocket,
    backoff: { initial: 50, max: 250 },
    ...options,
  });
  const recorder = new Recorder(hub);
  hub.connect();
  return { hub, recorder };
}
