// The client against the real ws-server binary, through a TCP proxy the
// test controls: join, publish and ack; cuts (dropped, blackholed), a
// restart, a message in flight at the cut, final refusals and token refresh;
// an rpc answered by a backend on loopback.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { WebSocketServer } from "ws";
import { HubError } from "../index.js";
import { at, client, sign, startProxy, startServer } from "./helpers.js";

/** Ends the clients and stops what the test started, once it is done. */
function cleanup(t, ...things) {
  t.after(async () => {
    for (const thing of things) {
      if (thing.hub) thing.hub.close();
      else if (thing.stop) await thing.stop();
      else if (thing.close) await thing.close();
    }
  });
}

/** A server, a proxy to it, Ann through the proxy and Bob straight to the server, both in `room`. */
async function throughProxy(t, room, annOptions = {}) {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const ann = client(proxy.url, annOptions);
  const bob = client(server.url);
  cleanup(t, ann, bob, proxy, server);
  await ann.hub.join(room);
  await bob.hub.join(room);
  return { proxy, ann, bob };
}

/** Publishes each of `contents` to `room`, one after the other: their seqs. */
async function publishAll(hub, room, contents) {
  const seqs = [];
  for (const content of contents) seqs.push(await hub.publish(room, { content }));
  return seqs;
}

/** The seqs of the messages of `room` handed on, which must rise one by one from `first`. */
function assertInOrder(recorder, room, first = 1) {
  const seqs = recorder.of("message").filter((m) => m.room === room).map((m) => m.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => first + i), `seqs of ${room}`);
}

test("connects, joins, publishes and is acked; presence and join events", async (t) => {
  const server = await startServer(["--join-leave-events", "true"]);
  const ann = client(server.url);
  const bob = client(server.url);
  cleanup(t, ann, bob, server);
  const joined = await ann.hub.join("chat");
  assert.equal(joined.seq, 0);
  assert.equal(typeof joined.epoch, "string");
  await bob.hub.join("chat");
  const inChat = (event) => event.room === "chat";
  await ann.recorder.find("member_joined", inChat);
  assert.equal(await ann.hub.publish("chat", { content: "hello" }), 1);
  assert.equal(await bob.hub.publish("chat", { data: { price: 1.5 } }), 2);
  for (const { recorder } of [ann, bob]) {
    await recorder.until(() => recorder.said("chat").length === 2, "both messages");
    assert.deepEqual(recorder.said("chat"), ["hello", undefined]);
    assert.deepEqual(recorder.of("message")[1].data, { price: 1.5 });
  }
  // A join with since replays what the room holds after it.
  const late = client(server.url);
  cleanup(t, late);
  await late.hub.join("chat", { since: 1 });
  await late.recorder.until(() => late.recorder.of("message").length === 1, "the replay of seq 2");
  assert.deepEqual(late.recorder.of("message")[0].data, { price: 1.5 });
  assert.deepEqual(await late.recorder.nth("recovered", 1), { room: "chat", complete: true });
  const presence = await ann.hub.presence("chat");
  assert.equal(presence.count, 3);
  assert.equal(presence.members.length, 3);
  const refusal = await ann.hub.publish("elsewhere", { content: "not joined" }).catch((e) => e);
  assert.ok(refusal instanceof HubError);
  assert.equal(refusal.code, "not_joined");
  bob.hub.leave("chat");
  const left = await ann.recorder.find("member_left", inChat);
  assert.match(left.member, /^127\.0\.0\.1:/);
});

test("a dropped connection is recovered: every message once and in order", async (t) => {
  const { proxy, ann, bob } = await throughProxy(t, "cut");
  await publishAll(bob.hub, "cut", ["m1"]);
  await ann.recorder.saying("cut", ["m1"]);
  proxy.drop();
  await ann.recorder.nth("disconnected", 1);
  await publishAll(bob.hub, "cut", ["m2", "m3"]);
  const recovered = await ann.recorder.nth("recovered", 1);
  assert.deepEqual(recovered, { room: "cut", complete: true });
  await publishAll(bob.hub, "cut", ["m4"]);
  await ann.recorder.saying("cut", ["m1", "m2", "m3", "m4"]);
  assert.deepEqual(ann.recorder.said("cut"), ["m1", "m2", "m3", "m4"]);
  assertInOrder(ann.recorder, "cut");
  assert.equal(ann.recorder.of("connected").length, 2);
  assert.deepEqual(ann.recorder.of("gap"), []);
});

test("a client whose server is gone goes to the next of its URLs and recovers there", async (t) => {
  const server = await startServer();
  const [first, second] = [await startProxy(server.port), await startProxy(server.port)];
  const ann = client(first.url, { servers: [second.url] });
  const bob = client(server.url);
  cleanup(t, ann, bob, first, second, server);
  await ann.hub.join("moved");
  await bob.hub.join("moved");
  await publishAll(bob.hub, "moved", ["m1"]);
  await ann.recorder.saying("moved", ["m1"]);
  // The first URL is gone for good: only the second can serve Ann.
  first.refusing = true;
  first.drop();
  await ann.recorder.nth("disconnected", 1);
  await publishAll(bob.hub, "moved", ["m2", "m3"]);
  await ann.recorder.saying("moved", ["m1", "m2", "m3"]);
  assert.deepEqual(ann.recorder.said("moved"), ["m1", "m2", "m3"]);
  assertInOrder(ann.recorder, "moved");
  assert.equal(second.connections, 1);
  assert.deepEqual(ann.recorder.of("gap"), []);
});

test("a blackholed connection (bytes stop, nothing closes) is seen dead by its pings and recovered", async (t) => {
  const { proxy, ann, bob } = await throughProxy(t, "hole", { pingInterval: 200, pongTimeout: 600 });
  await publishAll(bob.hub, "hole", ["m1"]);
  await ann.recorder.saying("hole", ["m1"]);
  proxy.blackhole();
  await publishAll(bob.hub, "hole", ["m2"]);
  const silent = await ann.recorder.nth("disconnected", 1);
  assert.equal(silent.reason, "the server went silent");
  assert.equal(silent.final, false);
  await ann.recorder.nth("recovered", 1);
  await publishAll(bob.hub, "hole", ["m3"]);
  await ann.recorder.saying("hole", ["m1", "m2", "m3"]);
  assert.deepEqual(ann.recorder.said("hole"), ["m1", "m2", "m3"]);
  assertInOrder(ann.recorder, "hole");
});

test("a message in flight at the cut is acked once and delivered once", async (t) => {
  const { proxy, ann, bob } = await throughProxy(t, "flight");
  // The hub hears Ann, Ann hears nothing: her message is published, its ack lost.
  proxy.blackhole({ up: false, down: true });
  let acks = 0;
  const acked = ann.hub.publish("flight", { content: "in flight" }).then((seq) => {
    acks += 1;
    return seq;
  });
  await bob.recorder.saying("flight", ["in flight"]);
  proxy.drop();
  const seq = await acked;
  assert.equal(seq, 1);
  await publishAll(bob.hub, "flight", ["after"]);
  for (const { recorder } of [ann, bob]) {
    await recorder.saying("flight", ["in flight", "after"]);
    assert.deepEqual(recorder.said("flight"), ["in flight", "after"]);
    assertInOrder(recorder, "flight");
  }
  assert.equal(acks, 1);
  assert.equal(ann.recorder.of("connected").length, 2);
});

test("a restarted in-memory server (a new epoch) is joined again from its start", async (t) => {
  const first = await startServer();
  const proxy = await startProxy(first.port);
  const ann = client(proxy.url);
  cleanup(t, ann, proxy);
  await ann.hub.join("again");
  await ann.hub.publish("again", { content: "before" });
  await ann.hub.publish("again", { content: "before 2" });
  await ann.recorder.saying("again", ["before", "before 2"]);
  await first.stop();
  await ann.recorder.nth("disconnected", 1);
  const second = await startServer();
  cleanup(t, second);
  proxy.target = second.port;
  // Published on the new server, before or after Ann is back: seq 1 of its numbering.
  const bob = client(second.url);
  cleanup(t, bob);
  await bob.hub.join("again");
  await bob.hub.publish("again", { content: "after" });
  const renumbered = await ann.recorder.nth("renumbered", 1);
  assert.equal(renumbered.room, "again");
  await ann.recorder.nth("recovered", 1);
  await bob.hub.publish("again", { content: "after 2" });
  await ann.recorder.saying("again", ["before", "before 2", "after", "after 2"]);
  assert.deepEqual(ann.recorder.said("again"), ["before", "before 2", "after", "after 2"]);
  const seqs = ann.recorder.of("message").map((m) => m.seq);
  assert.deepEqual(seqs, [1, 2, 1, 2]);
});

test("a handshake refused with 401 stops the client, which says why", async (t) => {
  const server = await startServer(["--jwt-secret", "s3cret"]);
  const ann = client(server.url, { token: sign({ sub: "ann", exp: at(3600) }, "another key") });
  cleanup(t, ann, server);
  const refused = await ann.recorder.nth("disconnected", 1);
  assert.equal(refused.final, true);
  assert.equal(refused.status, 401);
  assert.equal(ann.hub.state, "closed");
  assert.equal(ann.recorder.of("connecting").length, 1);
  assert.equal(ann.recorder.of("connected").length, 0);
});

test("a 4000-range close is final: a token that expires unrefreshed (4001) stops a client with no token function", async (t) => {
  const flags = ["--jwt-secret", "s3cret", "--heartbeat-interval", "0.1", "--refresh-before", "3600"];
  const server = await startServer(flags);
  const ann = client(server.url, { token: sign({ sub: "ann", exp: at(4) }, "s3cret") });
  cleanup(t, ann, server);
  await ann.recorder.nth("connected", 1);
  const closed = await ann.recorder.nth("disconnected", 1);
  assert.equal(closed.code, 4001);
  assert.equal(closed.final, true);
  assert.equal(ann.hub.state, "closed");
  assert.equal(ann.recorder.of("connecting").length, 1);
});

test("a token function is called at connection and again when the hub asks for a refresh", async (t) => {
  const flags = ["--jwt-secret", "s3cret", "--heartbeat-interval", "0.1", "--refresh-before", "3600"];
  const server = await startServer(flags);
  const tokens = [];
  const token = async () => {
    // The first expires within --refresh-before, so the hub asks; the next does not.
    const claims = { sub: "ann", exp: tokens.length === 0 ? at(600) : at(7200) };
    tokens.push(claims.exp);
    return sign(claims, "s3cret");
  };
  const ann = client(server.url, { token });
  cleanup(t, ann, server);
  const refreshed = await ann.recorder.nth("refreshed", 1);
  assert.equal(refreshed.expires, tokens[1]);
  await ann.hub.join("fresh");
  assert.equal(await ann.hub.publish("fresh", { content: "still connected" }), 1);
  assert.equal(ann.recorder.of("connected").length, 1);
  assert.deepEqual(ann.recorder.of("disconnected"), []);
});

test("a token that expires closes the connection (4001); a token function gives a fresh one and the client reconnects", async (t) => {
  // Under a second ahead, in whole seconds: never asked to refresh, closed at the first beat past exp.
  const flags = ["--jwt-secret", "s3cret", "--heartbeat-interval", "0.1", "--refresh-before", "0.5"];
  const server = await startServer(flags);
  let calls = 0;
  const token = () => sign({ sub: "ann", exp: calls++ === 0 ? at(4) : at(3600) }, "s3cret");
  const ann = client(server.url, { token });
  cleanup(t, ann, server);
  await ann.hub.join("renewed");
  const expired = await ann.recorder.nth("disconnected", 1);
  assert.equal(expired.code, 4001);
  assert.equal(expired.final, false);
  await ann.recorder.nth("connected", 2);
  assert.equal(await ann.hub.publish("renewed", { content: "back" }), 1);
  assert.equal(calls, 2);
});

test("what the history no longer holds is a gap, and the recovery says it is incomplete", async (t) => {
  const server = await startServer(["--history", "2"]);
  const proxy = await startProxy(server.port);
  const ann = client(proxy.url);
  const bob = client(server.url);
  cleanup(t, ann, bob, proxy, server);
  await ann.hub.join("short");
  await bob.hub.join("short");
  await publishAll(bob.hub, "short", ["m1"]);
  await ann.recorder.saying("short", ["m1"]);
  // Ann stays away until all five are published: the history keeps the last two.
  proxy.refusing = true;
  proxy.drop();
  await ann.recorder.nth("disconnected", 1);
  await publishAll(bob.hub, "short", ["m2", "m3", "m4", "m5", "m6"]);
  proxy.refusing = false;
  assert.deepEqual(await ann.recorder.nth("recovered", 1), { room: "short", complete: false });
  assert.deepEqual(ann.recorder.said("short"), ["m1", "m5", "m6"]);
  assert.deepEqual(ann.recorder.of("gap"), [{ room: "short", from: 2, to: 4 }]);
});

test("a room token from a function is renewed when the hub asks; a room token given as a string expires", async (t) => {
  const flags = ["--jwt-secret", "s3cret", "--heartbeat-interval", "0.1", "--refresh-before", "3600"];
  const server = await startServer(flags);
  const ann = client(server.url, { token: sign({ sub: "ann", rooms: ["lobby"], exp: at(7200) }, "s3cret") });
  cleanup(t, ann, server);
  const roomToken = (room, exp) => sign({ sub: "ann", room, exp }, "s3cret");
  let renewals = 0;
  const renewed = () => roomToken("private:2", renewals++ === 0 ? at(6) : at(7200));
  await ann.hub.join("private:1", { token: roomToken("private:1", at(6)) });
  await ann.hub.join("private:2", { token: renewed });
  const expired = await ann.recorder.find("left", (e) => e.room === "private:1");
  assert.equal(expired.reason, "token_expired");
  assert.ok(renewals >= 2, "asked again for the room token of private:2");
  assert.equal(await ann.hub.publish("private:2", { content: "kept" }), 1);
  const refusal = await ann.hub.publish("private:1", { content: "gone" }).catch((e) => e);
  assert.equal(refusal.code, "not_joined");
  assert.deepEqual(ann.recorder.of("error"), []);
});

/** A backend on a free loopback port whose rpc hook adds `a` and `b`, and refuses any other method. */
async function rpcBackend(t) {
  const backend = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const call = JSON.parse(body);
      const answer = call.method === "add" ? { result: call.data.a + call.data.b } : { error: `no method ${call.method}` };
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
  t.after(() => backend.close());
  return `http://127.0.0.1:${backend.address().port}/rpc`;
}

test("an rpc resolves with the backend's result, or rejects with its reason; one made while connecting waits for the connection", async (t) => {
  const server = await startServer(["--hook-rpc", await rpcBackend(t)]);
  const ann = client(server.url);
  cleanup(t, ann, server);
  // Made while connecting: sent once connected.
  const early = ann.hub.rpc("add", { a: 1, b: 1 });
  await ann.hub.join("general");
  assert.equal(await early, 2);
  assert.equal(await ann.hub.rpc("add", { a: 2, b: 3 }), 5);
  await assert.rejects(ann.hub.rpc("divide", { a: 1, b: 0 }), (error) => {
    assert.ok(error instanceof HubError);
    assert.equal(error.code, "refused");
    assert.equal(error.envelope.message, "no method divide");
    return true;
  });
  const [four, six] = await Promise.all([ann.hub.rpc("add", { a: 2, b: 2 }), ann.hub.rpc("add", { a: 3, b: 3 })]);
  assert.deepEqual([four, six], [4, 6]);
});

/**
 * A hub of the test's own, scripted: on each connection in turn, once the
 * client's join came, it sends that connection's envelopes; the first
 * connection then ends, the others stay open.
 */
async function scriptedHub(t, script) {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  let turn = 0;
  server.on("connection", (socket) => {
    const envelopes = script[turn++] ?? [];
    const last = turn === 1;
    socket.on("message", (data) => {
      if (JSON.parse(data.toString()).type !== "join") return;
      for (const envelope of envelopes) socket.send(JSON.stringify(envelope));
      if (last) socket.terminate();
    });
  });
  t.after(() => {
    for (const socket of server.clients) socket.terminate();
    return new Promise((resolve) => server.close(resolve));
  });
  return `ws://127.0.0.1:${server.address().port}/ws`;
}

test("a gap told during a recovery comes after the replayed messages before it", async (t) => {
  const joined = (seq) => ({ type: "joined", room: "news", seq, epoch: "e" });
  const message = (seq) => ({ type: "message", room: "news", seq, content: `m${seq}` });
  const url = await scriptedHub(t, [
    [joined(0), message(1)],
    [joined(5), message(2), message(3), { type: "gap", room: "news", from: 4, to: 4 }, message(5), { type: "recovered", room: "news", complete: true }],
  ]);
  const ann = client(url);
  cleanup(t, ann);
  await ann.hub.join("news");
  await ann.recorder.saying("news", ["m1", "m2", "m3", "m5"]);
  assert.deepEqual(ann.recorder.said("news"), ["m1", "m2", "m3", "m5"]);
  assert.deepEqual(ann.recorder.of("gap"), [{ type: "gap", room: "news", from: 4, to: 4 }]);
});
