// A move to another server of the same hub, through a real redis-server:
// the epoch is the cluster's, so the client recovers what it missed from
// Redis with its `since`, every message once and in order; and a message
// refused `unavailable` while Redis is down, sent again until acked.
// Without redis-server each test says it was skipped, unless
// WS_REQUIRE_REDIS=1 makes that a failure.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { client, patiently, startProxy, startRedis, startServer } from "./helpers.js";

test("a client moved to another server of the cluster recovers from Redis, same epoch", async (t) => {
  const redis = await startRedis();
  if (!redis) return t.skip("redis-server is not installed (apt-get install redis-server)");
  const first = await startServer(["--redis", redis.url]);
  const second = await startServer(["--redis", redis.url]);
  const proxy = await startProxy(first.port);
  const ann = client(proxy.url);
  const bob = client(first.url);
  t.after(async () => {
    ann.hub.close();
    bob.hub.close();
    await proxy.close();
    await first.stop();
    await second.stop();
    await redis.stop();
  });
  const joined = await ann.hub.join("moving");
  await bob.hub.join("moving");
  await bob.hub.publish("moving", { content: "m1" });
  await ann.recorder.saying("moving", ["m1"]);
  proxy.target = second.port;
  proxy.drop();
  await ann.recorder.nth("disconnected", 1);
  await bob.hub.publish("moving", { content: "m2" });
  await bob.hub.publish("moving", { content: "m3" });
  assert.deepEqual(await ann.recorder.nth("recovered", 1), { room: "moving", complete: true });
  await bob.hub.publish("moving", { content: "m4" });
  await ann.recorder.saying("moving", ["m1", "m2", "m3", "m4"]);
  assert.deepEqual(ann.recorder.said("moving"), ["m1", "m2", "m3", "m4"]);
  assert.deepEqual(ann.recorder.of("message").map((m) => m.seq), [1, 2, 3, 4]);
  assert.deepEqual(ann.recorder.of("renumbered"), [], "the cluster's epoch is the same on every server");
  assert.equal(proxy.connections, 2);
  assert.ok(joined.epoch);
});

test("a message refused unavailable while Redis is down is sent again with backoff until acked", async (t) => {
  const redis = await startRedis();
  if (!redis) return t.skip("redis-server is not installed (apt-get install redis-server)");
  const server = await startServer(["--redis", redis.url, "--rate-limit", "0"]);
  // What the hub sends the client, seen beside it.
  const heard = [];
  let hear = () => {};
  class Tapped extends WebSocket {
    constructor(url) {
      super(url);
      this.addEventListener("message", ({ data }) => {
        heard.push(JSON.parse(data));
        hear();
      });
    }
  }
  const ann = client(server.url, { WebSocket: Tapped });
  t.after(async () => {
    ann.hub.close();
    await server.stop();
    await redis.stop();
  });
  await ann.hub.join("down");
  await redis.kill();
  let settled = false;
  const acked = ann.hub.publish("down", { content: "while down" }).finally(() => (settled = true));
  const unavailable = (e) => e.type === "error" && e.code === "unavailable";
  const refused = new Promise((resolve) => {
    hear = () => heard.some(unavailable) && resolve();
    hear();
  });
  await patiently(refused, "an unavailable error");
  assert.equal(settled, false, "unavailable is not final");
  await redis.restart();
  const seq = await acked;
  assert.ok(seq >= 1);
  const refusal = heard.find(unavailable);
  assert.equal(heard.filter((e) => e.type === "ack" && e.id === refusal.id).length, 1);
});
