// Typed use of the client, checked by `npm run check` (tsc --noEmit): the
// declarations describe what an application writes.

import { HubClient, HubError, backoffDelay, type HubMessage, type Disconnected } from "../index.js";

const hub = new HubClient("ws://127.0.0.1:8080/ws", {
  WebSocket,
  token: async () => "eyJ...",
  backoff: { initial: 500, max: 30_000 },
  pingInterval: 25_000,
  pongTimeout: 10_000,
});

hub.on("message", (message: HubMessage) => {
  const seq: number = message.seq;
  const text: string | undefined = message.content;
  console.log(seq, text, message.data);
});
hub.on("disconnected", (why: Disconnected) => console.log(why.final, why.code, why.reason));
hub.on("recovered", ({ room, complete }) => complete || console.log(`missed some of ${room}`));
hub.on("gap", ({ from, to }) => console.log(from, to));
hub.on("presence", ({ count, members }) => console.log(count, members.join(", ")));
hub.on("member_joined", ({ member }) => console.log(member));
hub.connect();

async function chat(): Promise<void> {
  const joined = await hub.join("general");
  const epoch: string = joined.epoch;
  await hub.join("private:42", { token: "eyJ..." });
  try {
    const seq: number = await hub.publish("general", { content: "Hello", data: { n: 1 } });
    console.log(seq, epoch, hub.since("general"), hub.state);
  } catch (error) {
    if (error instanceof HubError) console.log(error.code, error.envelope.message);
  }
  const { count } = await hub.presence("general");
  const score: number = await hub.rpc<number>("score", { game: 7 });
  console.log(score);
  console.log(count, backoffDelay({ initial: 1, max: 2 }, 3));
  hub.leave("general");
  hub.close();
}
chat();
