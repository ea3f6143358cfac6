// The chaos run's JavaScript members: clients/js's HubClient in Node, with
// the ws package clients/js installs (npm ci there). Given, as JSON in the
// first argument, the servers' URLs, the first client's number and each
// client's rooms, it starts one client per entry, client `first + i` on
// server `(first + i) % urls.length` first and the others after it, and
// prints every event as a line of JSON, {"c": client, "e": event, "v": value},
// for the run's record. It runs until its standard input closes.

import { createRequire } from "node:module";
import { HubClient } from "../../../clients/js/index.js";

const require = createRequire(new URL("../../../clients/js/package.json", import.meta.url));
const WebSocket = require("ws");

const { urls, first, rooms } = JSON.parse(process.argv[2]);
const EVENTS = ["connected", "disconnected", "message", "gap", "renumbered", "error"];
const clients = [];

function tell(c, e, v) {
  process.stdout.write(`${JSON.stringify({ c, e, v })}\n`);
}

rooms.forEach((theirs, i) => {
  const c = first + i;
  const turn = urls.map((_, k) => urls[(c + k) % urls.length]);
  const hub = new HubClient(turn[0], {
    WebSocket,
    servers: turn.slice(1),
    backoff: { initial: 100, max: 2000 },
    pingInterval: 1000,
    pongTimeout: 2000,
  });
  for (const name of EVENTS) hub.on(name, (value) => tell(c, name, value));
  hub.connect();
  for (const room of theirs) {
    hub.join(room).then(
      (joined) => tell(c, "joined", joined),
      (error) => tell(c, "error", error.envelope ?? { code: "join", message: String(error) }),
    );
  }
  clients.push(hub);
});

process.stdin.resume();
process.stdin.on("end", () => {
  for (const hub of clients) hub.close();
  process.exit(0);
});
