// Jitsi room tokens minted in real call flows, checked by an independent
// Prosody-rules checker (prosody_check.mjs, npm jsonwebtoken), plus the
// attacks: nobody but a participant ever holds one, on their own socket.
// Also redial and crossed calls.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, online, next, ask, mark, sleep, SETTLE_MS, USERS, GROUP } from "./harness.mjs";
import { checkProsody, resign, tamper } from "./prosody_check.mjs";

const DOMAIN = "meet.example.com";
const APP_ID = "callgate-test";
const APP_SECRET = "jitsi-app-secret-for-the-js-suite-0123456789";
const SUBJECT = "meet.jitsi";
const HS = { alg: "HS256", key: APP_SECRET, issuers: [APP_ID], audiences: ["jitsi"], subjects: [SUBJECT] };

let server;
let alice, alice2, bob, carol, mallory;
let started = [];

before(async () => {
  server = await startServer({
    env: {
      CALLGATE__JITSI__DOMAIN: DOMAIN,
      CALLGATE__JITSI__TOKEN: "hs256",
      CALLGATE__JITSI__APP_ID: APP_ID,
      CALLGATE__JITSI__SUBJECT: SUBJECT,
      CALLGATE_JITSI_APP_SECRET: APP_SECRET,
    },
    secrets: [APP_SECRET],
  });
  // One login at a time: argon2 on a loaded 2-core machine would answer server_busy to five at once.
  alice = await online(server.url, USERS.alice);
  alice2 = await online(server.url, USERS.alice);
  bob = await online(server.url, USERS.bob);
  carol = await online(server.url, USERS.carol);
  mallory = await online(server.url, USERS.mallory);
});

afterEach(async () => {
  for (const callId of started) {
    for (const s of [alice, bob, carol]) {
      await ask(s, "endVideoCall", { callId, endForAll: true }).catch(() => {});
      await ask(s, "endVideoCall", { callId }).catch(() => {});
    }
  }
  started = [];
  await sleep(50);
});

after(async () => {
  for (const s of [alice, alice2, bob, carol, mallory]) s?.disconnect();
  await server?.stop();
});

/** Every JWT-looking string in what `socket` received since `from`. */
function tokensSeen(events) {
  return JSON.stringify(events).match(/eyJ[\w-]+\.[\w-]+\.[\w-]*/g) ?? [];
}

async function ring() {
  const incoming = next(bob, "incomingVideoCall");
  const ack = await ask(alice, "initiateVideoCall", { receiverId: USERS.bob.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  started.push(ack.callId);
  return { ack, incoming: await incoming };
}

test("the caller's ack and the callee's accept ack carry their own tokens, which Prosody's rules accept", async () => {
  const seen = mark([alice, alice2, bob, carol, mallory]);
  const { ack, incoming } = await ring();
  assert.deepEqual(Object.keys(ack.jitsi).sort(), ["domain", "jwt", "room"]);
  assert.equal(ack.jitsi.domain, DOMAIN);
  assert.equal(ack.jitsi.room, ack.roomName);
  assert.equal(ack.jitsi.room, ack.jitsi.room.toLowerCase());
  const caller = checkProsody(ack.jitsi.jwt, { ...HS, room: ack.jitsi.room }).payload;
  assert.deepEqual(caller.context, { user: { id: USERS.alice.id, name: USERS.alice.displayName, moderator: true } });
  assert.equal(caller.exp - caller.iat, 7200);
  assert.equal(caller.iat - caller.nbf, 10);
  assert.equal(incoming.jitsi, undefined, "incomingVideoCall carries no token");

  const accepted = next(alice, "videoCallAccepted");
  const answer = await ask(bob, "acceptVideoCall", { callId: ack.callId });
  assert.equal(answer.ok, true);
  const callee = checkProsody(answer.jitsi.jwt, { ...HS, room: answer.jitsi.room }).payload;
  assert.equal(answer.jitsi.room, ack.jitsi.room);
  assert.deepEqual(callee.context.user, { id: USERS.bob.id, name: USERS.bob.displayName, moderator: false });
  assert.equal((await accepted).jitsi, undefined);

  const [a, a2, b, c, m] = await seen();
  // Events (not acks) carried no token to anyone; the second alice device got nothing.
  for (const events of [a, a2, b, c, m]) assert.deepEqual(tokensSeen(events), []);
});

test("tampered, expired, not-yet-valid, wrong-room and wrong-audience tokens fail the same checker", async () => {
  const { ack } = await ring();
  const token = ack.jitsi.jwt;
  const room = ack.jitsi.room;
  const now = Math.floor(Date.now() / 1000);
  assert.ok(checkProsody(token, { ...HS, room }));
  const bad = {
    tampered: [tamper(token), room],
    expired: [resign(token, (p) => ({ ...p, exp: now }), { key: APP_SECRET }), room],
    "future nbf": [resign(token, (p) => ({ ...p, nbf: now + 3600 }), { key: APP_SECRET }), room],
    "wrong room": [token, "another-room"],
    "wrong audience": [resign(token, (p) => ({ ...p, aud: "other" }), { key: APP_SECRET }), room],
    "other secret": [resign(token, (p) => p, { key: "x".repeat(40) }), room],
    "typ not JWT": [resign(token, (p) => p, { key: APP_SECRET, header: { typ: "jwt" } }), room],
    "string exp": [resign(token, (p) => ({ ...p, exp: String(p.exp) }), { key: APP_SECRET }), room],
    "wrong sub": [resign(token, (p) => ({ ...p, sub: "other.domain" }), { key: APP_SECRET }), room],
    "numeric user id": [resign(token, (p) => ({ ...p, context: { user: { id: 7 } } }), { key: APP_SECRET }), room],
  };
  for (const [what, [t, r]] of Object.entries(bad)) {
    assert.throws(() => checkProsody(t, { ...HS, room: r }), undefined, what);
  }
  // At exp itself the token is refused; one second before, accepted.
  const payload = checkProsody(token, { ...HS, room }).payload;
  assert.throws(() => checkProsody(token, { ...HS, room, now: payload.exp }));
  assert.ok(checkProsody(token, { ...HS, room, now: payload.exp - 1 }));
  assert.throws(() => checkProsody(token, { ...HS, room, now: payload.nbf - 1 }));
  // One second before nbf is refused, nbf itself accepted: no skew either way.
  assert.ok(checkProsody(token, { ...HS, room, now: payload.nbf }));
});

test("bystanders, forged accepts and outsiders' refreshes get no token", async () => {
  const seen = mark([carol, mallory, bob]);
  const { ack } = await ring();
  for (const s of [mallory, carol]) {
    const forged = await ask(s, "acceptVideoCall", { callId: ack.callId });
    assert.equal(forged.ok, false);
    assert.equal(forged.jitsi, undefined);
    const refresh = await ask(s, "refreshJitsiToken", { callId: ack.callId });
    assert.deepEqual([refresh.ok, refresh.error.code], [false, "not_found"]);
  }
  // The callee is not in the room until they accept.
  const early = await ask(bob, "refreshJitsiToken", { callId: ack.callId });
  assert.deepEqual([early.ok, early.error.code], [false, "not_found"]);
  const bogus = await ask(mallory, "refreshJitsiToken", { callId: "00000000-0000-4000-8000-000000000000" });
  assert.equal(bogus.error.code, "not_found");
  const malformed = await ask(mallory, "refreshJitsiToken", { callId: 42 });
  assert.equal(malformed.error.code, "bad_request");
  const [c, m, b] = await seen();
  for (const events of [c, m, b]) assert.deepEqual(tokensSeen(events), []);

  // The caller may refresh after a reload.
  const again = await ask(alice, "refreshJitsiToken", { callId: ack.callId });
  assert.equal(again.ok, true);
  assert.equal(again.callId, ack.callId);
  assert.equal(checkProsody(again.jitsi.jwt, { ...HS, room: again.jitsi.room }).payload.context.user.id, USERS.alice.id);
});

test("a callee who declined, and anyone once the call ended, gets nothing", async () => {
  const { ack } = await ring();
  const declined = await ask(bob, "rejectVideoCall", { callId: ack.callId });
  assert.equal(declined.ok, true);
  assert.equal(declined.jitsi, undefined);
  for (const s of [bob, alice]) {
    const r = await ask(s, "refreshJitsiToken", { callId: ack.callId });
    assert.equal(r.error.code, "not_found");
  }
  const second = await ring();
  assert.equal((await ask(bob, "acceptVideoCall", { callId: second.ack.callId })).ok, true);
  assert.equal((await ask(alice, "endVideoCall", { callId: second.ack.callId })).ok, true);
  for (const s of [bob, alice]) {
    const r = await ask(s, "refreshJitsiToken", { callId: second.ack.callId });
    assert.equal(r.error.code, "not_found");
  }
});

test("group calls: the caller and each member who joins get their own token; decliners and non-members none", async () => {
  const seen = mark([bob, carol, mallory, alice2]);
  const ack = await ask(alice, "initiateGroupVideoCall", { groupId: GROUP.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  started.push(ack.callId);
  const owner = checkProsody(ack.jitsi.jwt, { ...HS, room: ack.jitsi.room }).payload;
  assert.equal(owner.context.user.moderator, true);
  const joined = await ask(bob, "acceptVideoCall", { callId: ack.callId });
  assert.equal(joined.ok, true);
  const member = checkProsody(joined.jitsi.jwt, { ...HS, room: ack.jitsi.room }).payload;
  assert.deepEqual(member.context.user, { id: USERS.bob.id, name: USERS.bob.displayName, moderator: false });
  const declined = await ask(carol, "rejectVideoCall", { callId: ack.callId });
  assert.equal(declined.ok, true);
  assert.equal(declined.jitsi, undefined);
  assert.equal((await ask(carol, "refreshJitsiToken", { callId: ack.callId })).error.code, "not_found");
  assert.equal((await ask(mallory, "refreshJitsiToken", { callId: ack.callId })).error.code, "not_found");
  assert.equal((await ask(mallory, "acceptVideoCall", { callId: ack.callId })).ok, false);
  const [b, c, m, a2] = await seen();
  for (const events of [b, c, m, a2]) assert.deepEqual(tokensSeen(events), []);
});

test("a frontend that sends no ack gets its token as jitsiToken on the acting socket only", async () => {
  const seen = mark([alice2, bob, carol]);
  const token = next(alice, "jitsiToken");
  const ringing = next(alice, "videoCallRinging");
  alice.emit("initiateVideoCall", { receiverId: USERS.bob.id });
  const call = await ringing;
  started.push(call.callId);
  const event = await token;
  assert.equal(event.callId, call.callId);
  assert.equal(event.roomName, call.roomName);
  assert.equal(checkProsody(event.jitsi.jwt, { ...HS, room: event.jitsi.room }).payload.context.user.id, USERS.alice.id);
  assert.equal(call.jitsi, undefined, "videoCallRinging carries none");

  const bobToken = next(bob, "jitsiToken");
  bob.emit("acceptVideoCall", { callId: call.callId });
  const bobEvent = await bobToken;
  assert.equal(checkProsody(bobEvent.jitsi.jwt, { ...HS, room: call.roomName }).payload.context.user.id, USERS.bob.id);
  const [a2, b, c] = await seen();
  assert.deepEqual(tokensSeen(a2), [], "alice's other device got no token");
  assert.deepEqual(tokensSeen(c), []);
  assert.equal(tokensSeen(b).length, 1, "bob's only token is his own jitsiToken");
});

test("redial: the same caller calling again while it rings replaces the call for both sides", async () => {
  const first = await ring();
  const endedA = next(alice2, "videoCallEnded");
  const endedB = next(bob, "videoCallEnded");
  const incoming = next(bob, "incomingVideoCall");
  const ack = await ask(alice, "initiateVideoCall", { receiverId: USERS.bob.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  started.push(ack.callId);
  assert.notEqual(ack.callId, first.ack.callId);
  for (const e of [await endedA, await endedB]) {
    assert.equal(e.callId, first.ack.callId);
    assert.equal(e.reason, "replaced");
  }
  assert.equal((await incoming).callId, ack.callId);
  assert.equal((await ask(bob, "acceptVideoCall", { callId: first.ack.callId })).error.code, "not_found");
  assert.equal((await ask(bob, "acceptVideoCall", { callId: ack.callId })).ok, true);
});

test("crossed calls: the callee calling back answers the ringing call, marked crossed", async () => {
  const { ack } = await ring();
  const accepted = next(alice, "videoCallAccepted");
  const bobAccepted = next(bob, "videoCallAccepted");
  const back = await ask(bob, "initiateVideoCall", { receiverId: USERS.alice.id });
  assert.equal(back.ok, true, JSON.stringify(back));
  assert.equal(back.callId, ack.callId);
  assert.equal(back.crossed, true);
  assert.equal(back.state, "active");
  const bobs = checkProsody(back.jitsi.jwt, { ...HS, room: ack.jitsi.room }).payload;
  assert.equal(bobs.context.user.id, USERS.bob.id);
  for (const e of [await accepted, await bobAccepted]) {
    assert.equal(e.callId, ack.callId);
    assert.equal(e.crossed, true);
    assert.equal(e.jitsi, undefined);
  }
});

test("room names are lowercased at initiate, as Jitsi opens them", async () => {
  const ack = await ask(alice, "initiateVideoCall", { receiverId: USERS.bob.id, roomName: "Team-Standup" });
  assert.equal(ack.ok, true);
  started.push(ack.callId);
  assert.equal(ack.roomName, "team-standup");
  assert.equal(ack.jitsi.room, "team-standup");
  assert.equal(checkProsody(ack.jitsi.jwt, { ...HS, room: "team-standup" }).payload.room, "team-standup");
});

function rsaKeyFile() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const dir = mkdtempSync(join(tmpdir(), "callgate-jitsi-"));
  const file = join(dir, "jitsi.pem");
  writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  return { file, publicPem: publicKey.export({ type: "spki", format: "pem" }) };
}

async function callOn(url) {
  const a = await online(url, USERS.alice);
  const b = await online(url, USERS.bob);
  const ack = await ask(a, "initiateVideoCall", { receiverId: USERS.bob.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  const answer = await ask(b, "acceptVideoCall", { callId: ack.callId });
  assert.equal(answer.ok, true);
  a.disconnect();
  b.disconnect();
  return { ack, answer };
}

test("RS256 (ASAP): the public key is served at /jitsi/keys/<sha256(kid)>.pem and verifies the tokens", async () => {
  const { file, publicPem } = rsaKeyFile();
  const kid = "callgate/jitsi-test-key";
  const rs = await startServer({
    env: {
      CALLGATE__JITSI__DOMAIN: DOMAIN,
      CALLGATE__JITSI__TOKEN: "rs256",
      CALLGATE__JITSI__APP_ID: APP_ID,
      CALLGATE__JITSI__SUBJECT: "*",
      CALLGATE__JITSI__PRIVATE_KEY_FILE: file,
      CALLGATE__JITSI__KID: kid,
      CALLGATE__JITSI__MODERATOR: "everyone",
    },
  });
  try {
    const name = createHash("sha256").update(kid).digest("hex");
    const res = await fetch(`${rs.url}/jitsi/keys/${name}.pem`);
    assert.equal(res.status, 200);
    const served = await res.text();
    assert.equal(served.trim(), publicPem.trim());
    for (const other of ["0".repeat(64) + ".pem", name, "..%2f..%2fetc%2fpasswd"]) {
      assert.equal((await fetch(`${rs.url}/jitsi/keys/${other}`)).status, 404, other);
    }
    const { ack, answer } = await callOn(rs.url);
    const RS = { alg: "RS256", key: served, issuers: [APP_ID], audiences: ["jitsi"], subjects: [] };
    for (const [grant, user] of [[ack, USERS.alice], [answer, USERS.bob]]) {
      const { header, payload } = checkProsody(grant.jitsi.jwt, { ...RS, room: grant.jitsi.room });
      assert.equal(header.kid, kid);
      assert.equal(payload.sub, "*");
      assert.deepEqual(payload.context.user, { id: user.id, name: user.displayName, moderator: true });
    }
    // A token for another key, or HS256 with the public key as secret, fails.
    assert.throws(() => checkProsody(ack.jitsi.jwt, { ...RS, key: rsaKeyFile().publicPem, room: ack.jitsi.room }));
    const confused = resign(ack.jitsi.jwt, (p) => p, { key: served });
    assert.throws(() => checkProsody(confused, { ...RS, room: ack.jitsi.room }));
  } finally {
    await rs.stop();
  }
});

test("JaaS: iss chat, sub the AppID, room opened as <AppID>/<room>", async () => {
  const { file, publicPem } = rsaKeyFile();
  const appId = "vpaas-magic-cookie-0123456789abcdef";
  const kid = `${appId}/4f4910`;
  const jaas = await startServer({
    env: {
      CALLGATE__JITSI__DOMAIN: "8x8.vc",
      CALLGATE__JITSI__TOKEN: "jaas",
      CALLGATE__JITSI__APP_ID: appId,
      CALLGATE__JITSI__PRIVATE_KEY_FILE: file,
      CALLGATE__JITSI__KID: kid,
    },
  });
  try {
    const { ack } = await callOn(jaas.url);
    assert.equal(ack.jitsi.domain, "8x8.vc");
    assert.equal(ack.jitsi.room, `${appId}/${ack.roomName}`);
    const { header, payload } = checkProsody(ack.jitsi.jwt, {
      alg: "RS256",
      key: publicPem,
      issuers: ["chat"],
      audiences: ["jitsi"],
      subjects: [appId],
      room: ack.jitsi.room.split("/")[1],
    });
    assert.equal(header.kid, kid);
    assert.equal(payload.room, ack.roomName);
  } finally {
    await jaas.stop();
  }
});

test("with a domain and tokens off, acks give the room and no jwt", async () => {
  const open = await startServer({ env: { CALLGATE__JITSI__DOMAIN: DOMAIN } });
  try {
    const { ack, answer } = await callOn(open.url);
    assert.deepEqual(ack.jitsi, { domain: DOMAIN, room: ack.roomName });
    assert.deepEqual(answer.jitsi, { domain: DOMAIN, room: ack.roomName });
    const name = createHash("sha256").update("any-kid").digest("hex");
    assert.equal((await fetch(`${open.url}/jitsi/keys/${name}.pem`)).status, 404, "no key is served without RS256");
  } finally {
    await open.stop();
  }
});

test("production refuses a short HS256 app secret at start-up, without printing it", async () => {
  const short = "short-jitsi-secret";
  await assert.rejects(
    startServer({
      env: {
        CALLGATE__ENVIRONMENT: "production",
        CALLGATE__JITSI__DOMAIN: DOMAIN,
        CALLGATE__JITSI__TOKEN: "hs256",
        CALLGATE__JITSI__APP_ID: APP_ID,
        CALLGATE__JITSI__SUBJECT: SUBJECT,
        CALLGATE_JITSI_APP_SECRET: short,
      },
    }),
    (err) => err.message.includes("jitsi.app_secret") && !err.message.includes(short),
  );
});

void SETTLE_MS;
