// A move to another server of the same hub, through a real redis-server:
// the epoch is the cluster's, so the client recovers what it missed from
// Redis with its `since`, every message once and in order. Without
// redis-server the test says it was skipped, unless WS_REQUIRE_REDIS=1.

import assert from "node:assert/strict";
import { test } from "node:test";
import { client, startProxy, startRedis, startServer } from "./helpers.js";

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
