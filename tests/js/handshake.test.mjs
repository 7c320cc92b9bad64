// The handshake through the official socket.io-client, as the seed frontend does it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, login, connect, connected, ask, USERS, signJwt, claims } from "./harness.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

test("a token from POST /auth/login connects with auth: { token }", async () => {
  const session = await login(server.url, USERS.alice);
  assert.equal(session.user.id, USERS.alice.id);
  const socket = connect(server.url, session.token);
  await connected(socket);
  socket.disconnect();
});

test("the websocket transport alone connects too", async () => {
  const session = await login(server.url, USERS.alice);
  const socket = connect(server.url, session.token, { transports: ["websocket"] });
  await connected(socket);
  socket.disconnect();
});

// Issue 14, finding 4: the path without its trailing slash is the same
// transport, with the same checks, on both transports.
for (const transports of [["polling"], ["websocket"]]) {
  test(`path "/socket.io" without the trailing slash connects over ${transports[0]}`, async () => {
    const session = await login(server.url, USERS.alice);
    const socket = connect(server.url, session.token, { path: "/socket.io", addTrailingSlash: false, transports });
    await connected(socket);
    assert.equal((await ask(socket, "userOnline", USERS.alice.id)).ok, true);
    socket.disconnect();
  });

  test(`a foreign Origin is refused on "/socket.io" without the slash over ${transports[0]}`, async () => {
    const session = await login(server.url, USERS.alice);
    const socket = connect(server.url, session.token, {
      path: "/socket.io",
      addTrailingSlash: false,
      transports,
      extraHeaders: { Origin: "https://evil.example" },
    });
    await assert.rejects(connected(socket));
    socket.disconnect();
  });
}

for (const [name, token, code] of [
  ["a forged signature", () => signJwt(claims(USERS.alice), { secret: "someone-elses-secret-someone-elses-secret" }), "unauthorized"],
  ["alg none", () => signJwt(claims(USERS.alice), { alg: "none" }), "unauthorized"],
  ["an expired token", () => signJwt(claims(USERS.alice, -3600)), "token_expired"],
  ["no token", () => undefined, "unauthorized"],
]) {
  test(`${name} is refused with connect_error ${code}`, async () => {
    const socket = connect(server.url, token());
    await assert.rejects(connected(socket), (err) => err.message === code);
    socket.disconnect();
  });
}

test("25 events emitted in the connect callback get 25 acks, 20 times over", async () => {
  const session = await login(server.url, USERS.alice);
  for (let round = 0; round < 20; round++) {
    const socket = connect(server.url, session.token);
    const acks = await new Promise((resolve, reject) => {
      socket.on("connect_error", reject);
      socket.on("connect", () => {
        // Exactly what the seed frontend does: userOnline right on connect.
        const pending = Array.from({ length: 25 }, () => ask(socket, "userOnline", USERS.alice.id));
        Promise.all(pending).then(resolve, reject);
      });
    });
    assert.equal(acks.length, 25, `round ${round}`);
    for (const ack of acks) assert.equal(ack.ok, true);
    socket.disconnect();
  }
});
