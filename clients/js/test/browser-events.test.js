// What the client does on a browser's events, with the page's `window`
// and `document` stood in for by event targets: back `online`, or visible
// again after a sleep, a client waiting for its next attempt tries at once.
// The backoff is an hour, so only the event can bring it back in time.

import assert from "node:assert/strict";
import { test } from "node:test";
import { client, startProxy, startServer } from "./helpers.js";

const HOUR = 3_600_000;

/** A page's `window` and `document`, for the test's duration. */
function page(t) {
  globalThis.window = new EventTarget();
  globalThis.document = Object.assign(new EventTarget(), { visibilityState: "visible" });
  t.after(() => {
    delete globalThis.window;
    delete globalThis.document;
  });
}

/** A client through a proxy that was just dropped: waiting for its next attempt, an hour's backoff away. */
async function waiting(t, options = {}) {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const ann = client(proxy.url, { backoff: { initial: HOUR, max: HOUR }, ...options });
  t.after(async () => {
    ann.hub.close();
    await proxy.close();
    await server.stop();
  });
  await ann.hub.join("room");
  proxy.drop();
  await ann.recorder.nth("disconnected", 1);
  assert.equal(ann.hub.state, "waiting");
  return ann;
}

test("back online, a waiting client reconnects at once", async (t) => {
  page(t);
  const ann = await waiting(t);
  window.dispatchEvent(new Event("online"));
  await ann.recorder.nth("connected", 2);
  assert.equal(await ann.hub.publish("room", { content: "back" }), 1);
});

test("visible again after a sleep, a waiting client reconnects at once", async (t) => {
  page(t);
  const ann = await waiting(t, { sleepThreshold: 0 });
  document.visibilityState = "hidden";
  document.dispatchEvent(new Event("visibilitychange"));
  document.visibilityState = "visible";
  document.dispatchEvent(new Event("visibilitychange"));
  await ann.recorder.nth("connected", 2);
});

test("a closed client does not come back when the page is online again", async (t) => {
  page(t);
  const ann = await waiting(t);
  ann.hub.close();
  window.dispatchEvent(new Event("online"));
  assert.equal(ann.hub.state, "closed");
  assert.equal(ann.recorder.of("connecting").length, 1, "no attempt after close()");
});
