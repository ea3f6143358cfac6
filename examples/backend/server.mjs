// An application's backend for the hub's hooks (docs/hooks.md), with
// nothing but Node's standard library: it signs users in with a cookie,
// admits their hub connections by that cookie (no JWT), stores every
// message it allows and refuses those with a banned word, answers an
// `rpc` for a room's stored messages, and logs the hub's events.
//
//   node examples/backend/server.mjs
//   cargo run --release -p ws-server -- --hook-connect http://127.0.0.1:3000/connect \
//     --hook-refresh http://127.0.0.1:3000/refresh --hook-join http://127.0.0.1:3000/join \
//     --hook-publish http://127.0.0.1:3000/publish --hook-rpc http://127.0.0.1:3000/rpc \
//     --hook-events http://127.0.0.1:3000/events
//
// Then sign in at http://localhost:3000/login?user=alice and open the demo
// page at http://localhost:8080/: the cookie is the host's, whatever the
// port, so the hub's handshake brings it.
//
// Settings, from the environment: HOST (127.0.0.1), PORT (3000; 0 for a
// free one), STORE (the file the messages go to, one JSON per line;
// messages.jsonl), BANNED (words refused, comma-separated; "insult").

import { createServer } from "node:http";
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";

const HOST = process.env.HOST ?? "127.0.0.1";
const PORT = Number(process.env.PORT ?? 3000);
const STORE = process.env.STORE ?? "messages.jsonl";
const BANNED = (process.env.BANNED ?? "insult").split(",").map((w) => w.trim().toLowerCase()).filter(Boolean);
const SESSION_SECONDS = 3600;
const MAX_BODY = 1 << 20;

/** Session cookie -> user. */
const sessions = new Map();
/** Ids of the events seen, to drop those the hub sends twice. */
const seenEvents = new Set();
/** How many events of each type were seen. */
const eventCounts = {};

/** The messages stored for `room`, oldest first. */
function stored(room) {
  if (!existsSync(STORE)) return [];
  const lines = readFileSync(STORE, "utf8").split("\n").filter(Boolean);
  return lines.map((line) => JSON.parse(line)).filter((m) => m.room === room);
}

function now() {
  return Math.floor(Date.now() / 1000);
}

/** What each hook answers, given the JSON the hub posted. */
const hooks = {
  connect(call) {
    const user = sessions.get(call.cookies.session);
    if (!user) return { allow: false, status: 401, reason: `sign in first: http://localhost:${PORT}/login?user=NAME` };
    return { allow: true, user, expires: now() + SESSION_SECONDS };
  },
  refresh(call) {
    const signedIn = [...sessions.values()].includes(call.user);
    return signedIn ? { allow: true, expires: now() + SESSION_SECONDS } : { allow: false, reason: "signed out" };
  },
  join(call) {
    return { allow: true, data: { stored: stored(call.room).length } };
  },
  publish(call) {
    const text = `${call.content ?? ""} ${JSON.stringify(call.data ?? null)}`.toLowerCase();
    const banned = BANNED.find((word) => text.includes(word));
    if (banned) return { allow: false, reason: `the word "${banned}" is not allowed here` };
    const message = { room: call.room, user: call.user, content: call.content, data: call.data, time: Date.now() };
    appendFileSync(STORE, JSON.stringify(message) + "\n");
    return { allow: true };
  },
  rpc(call) {
    if (call.method === "history") {
      const limit = Math.min(Number(call.data?.limit ?? 20), 100);
      return { result: stored(String(call.data?.room)).slice(-limit) };
    }
    if (call.method === "events") return { result: eventCounts };
    return { error: `unknown method ${call.method}` };
  },
  events(call) {
    for (const event of call.events) {
      if (seenEvents.has(event.id)) continue;
      seenEvents.add(event.id);
      eventCounts[event.type] = (eventCounts[event.type] ?? 0) + 1;
      console.log(`event ${event.type} ${event.user}${event.room ? " in " + event.room : ""}`);
    }
    return {};
  },
};

/** Signs `user` in: a session cookie for this host. */
function login(url, response) {
  const user = url.searchParams.get("user");
  if (!user) return send(response, 400, "text/plain", "?user=NAME\n");
  const session = randomBytes(16).toString("hex");
  sessions.set(session, user);
  response.setHeader("Set-Cookie", `session=${session}; Path=/; HttpOnly; SameSite=Lax`);
  send(response, 200, "text/plain", `signed in as ${user}\n`);
}

function send(response, status, type, body) {
  response.writeHead(status, { "Content-Type": type });
  response.end(body);
}

const server = createServer((request, response) => {
  const url = new URL(request.url, `http://${request.headers.host ?? HOST}`);
  if (request.method === "GET" && url.pathname === "/login") return login(url, response);
  const hook = hooks[url.pathname.slice(1)];
  if (request.method !== "POST" || !hook) return send(response, 404, "text/plain", "not found\n");
  const chunks = [];
  let size = 0;
  request.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) request.destroy();
    else chunks.push(chunk);
  });
  request.on("end", () => {
    let call;
    try {
      call = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return send(response, 400, "text/plain", "not JSON\n");
    }
    send(response, 200, "application/json", JSON.stringify(hook(call)));
  });
});

server.listen(PORT, HOST, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
