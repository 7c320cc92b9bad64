// Attacks by a logged-in user through the official client. Alice and bob are
// the victims, carol (in the group, in no call) a bystander, mallory (in no
// group) the attacker. All four stay connected and record every event: each
// attack must be refused to the sender with the right code, and nothing may
// reach anyone else.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  online,
  next,
  nextOnEach,
  ask,
  mark,
  callEvents,
  eventNames,
  failureEventFor,
  USERS,
  GROUP,
  UUID_RE,
  FAILURE_EVENTS,
} from "./harness.mjs";

let server;
let alice, bob, carol, mallory;
/** callIds of calls the tests started, ended after each test if still live. */
let started = [];

before(async () => {
  server = await startServer();
  [alice, bob, carol, mallory] = await Promise.all(
    [USERS.alice, USERS.bob, USERS.carol, USERS.mallory].map((u) => online(server.url, u)),
  );
});

afterEach(async () => {
  for (const callId of started) {
    for (const s of [alice, bob]) {
      await ask(s, "endVideoCall", { callId, endForAll: true }).catch(() => {});
      await ask(s, "endVideoCall", { callId }).catch(() => {});
    }
  }
  started = [];
});

after(async () => {
  for (const s of [alice, bob, carol, mallory]) s?.disconnect();
  await server?.stop();
});

const CLIENT_EVENTS = [
  "userOnline",
  "joinVideoRoom",
  "joinGroup",
  "leaveGroup",
  "groupCreated",
  "initiateVideoCall",
  "initiateGroupVideoCall",
  "acceptVideoCall",
  "rejectVideoCall",
  "endVideoCall",
  "refreshJitsiToken",
];
const CALL_CONTROLS = ["acceptVideoCall", "rejectVideoCall", "endVideoCall"];
const TEN_KB = "x".repeat(10 * 1024);

// --- helpers ---------------------------------------------------------------

/**
 * Sends `event(payload)` as `socket` with an ack and checks it is refused with
 * `code`, both by ack and by the failure event (`videoCallFailed` for call
 * events, `error {event}` for the others), and that neither echoes what was sent.
 */
async function refused(socket, event, payload, code) {
  const label = `${event}(${short(payload)})`;
  const channel = failureEventFor(event);
  const notice = next(socket, channel);
  const ack = await ask(socket, event, payload);
  assert.equal(ack.ok, false, `${label} must be refused, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error?.code, code, `${label}: ack ${JSON.stringify(ack)}`);
  const failure = await notice;
  assert.equal(failure.code, code, `${label}: ${channel} ${JSON.stringify(failure)}`);
  if (channel === "error") assert.equal(failure.event, event, `${label}: error names the event`);
  for (const reply of [ack, failure]) assertNoEcho(reply, label);
  return ack;
}

/** A refusal never repeats an operator, an oversized value or an array it was sent. */
function assertNoEcho(reply, label) {
  const text = JSON.stringify(reply);
  assert.ok(!text.includes("$ne"), `${label}: reply echoes an operator: ${text}`);
  assert.ok(text.length < 1000, `${label}: reply echoes a large value (${text.length} chars)`);
}

function short(payload) {
  const text = JSON.stringify(payload) ?? "undefined";
  return text.length > 60 ? `${text.slice(0, 40)}…(${text.length} chars)` : text;
}

/**
 * Runs `attack`, then checks, after a settle time, that the victims and the
 * bystander received nothing and the attacker only refusals.
 */
async function contained(attack, victims = [alice, bob]) {
  const since = mark([mallory, carol, ...victims]);
  await attack();
  const [toMallory, toCarol, ...got] = await since();
  victims.forEach((v, i) => assert.deepEqual(got[i], [], `victim ${i} received ${JSON.stringify(got[i])}`));
  assert.deepEqual(toCarol, [], "the bystander received nothing");
  assert.deepEqual(
    toMallory.filter((e) => !FAILURE_EVENTS.includes(e.event)),
    [],
    "the attacker received nothing but refusals",
  );
  assertBystandersUntouched();
}

/** Over the whole file: carol never received anything, mallory never a call event. */
function assertBystandersUntouched() {
  assert.deepEqual(carol.received, [], "the bystander has received nothing since connecting");
  assert.deepEqual(callEvents(mallory), [], "the attacker has never received a call event");
}

/** Alice calls bob (acked); resolves to the record once bob's device rings. */
async function aliceCallsBob() {
  const ringing = next(bob, "incomingVideoCall");
  const ack = await ask(alice, "initiateVideoCall", { receiverId: USERS.bob.id, callerId: USERS.alice.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.match(ack.callId, UUID_RE);
  started.push(ack.callId);
  const incoming = await ringing;
  assert.equal(incoming.callId, ack.callId);
  return incoming;
}

/** Every way mallory can name alice and bob's call, knowing its callId and roomName. */
function callRefs(call) {
  return [
    { callId: call.callId },
    { roomName: call.roomName },
    { callId: call.callId, roomName: call.roomName },
    { callId: call.callId, endForAll: true },
    { ...call },
  ];
}

/** Mallory tries every control on every reference to `call`: each is not_found. */
async function malloryControls(call) {
  for (const event of CALL_CONTROLS) {
    for (const ref of callRefs(call)) await refused(mallory, event, ref, "not_found");
  }
}

// --- identity -----------------------------------------------------------------

test("a spoofed callerId in initiateVideoCall is refused with forbidden and rings nobody", async () => {
  await contained(async () => {
    await refused(mallory, "initiateVideoCall", { receiverId: USERS.bob.id, callerId: USERS.alice.id, callerName: USERS.alice.displayName }, "forbidden");
    await refused(mallory, "initiateVideoCall", { receiverId: USERS.alice.id, callerId: USERS.bob.id }, "forbidden");
  });
  // An insider spoofing a colleague is refused the same way.
  await contained(() => refused(alice, "initiateVideoCall", { receiverId: USERS.bob.id, callerId: USERS.carol.id }, "forbidden"), [bob]);
});

test("a spoofed callerId in initiateGroupVideoCall is refused with forbidden and rings nobody", async () => {
  await contained(() =>
    refused(mallory, "initiateGroupVideoCall", { groupId: GROUP.id, callerId: USERS.alice.id, isGroupCall: true }, "forbidden"),
  );
});

test("userOnline and joinVideoRoom with another user's id are refused with error forbidden", async () => {
  await contained(async () => {
    await refused(mallory, "userOnline", USERS.alice.id, "forbidden");
    await refused(mallory, "userOnline", { userId: USERS.alice.id }, "forbidden");
    await refused(mallory, "joinVideoRoom", { userId: USERS.alice.id }, "forbidden");
    await refused(mallory, "joinVideoRoom", USERS.bob.id, "forbidden");
  });
  // Mallory did not end up in alice's room: a call to alice rings alice only.
  const since = mark([mallory, carol]);
  const ringing = next(alice, "incomingVideoCall");
  const ack = await ask(bob, "initiateVideoCall", { receiverId: USERS.alice.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  started.push(ack.callId);
  assert.equal((await ringing).callId, ack.callId);
  const cancelled = next(alice, "videoCallEnded");
  assert.equal((await ask(bob, "endVideoCall", { callId: ack.callId })).ok, true);
  assert.equal((await cancelled).reason, "cancelled");
  const [toMallory, toCarol] = await since();
  assert.deepEqual(toMallory, [], "the attacker heard nothing of alice's call");
  assert.deepEqual(toCarol, [], "the bystander heard nothing of alice's call");
});

// --- groups -------------------------------------------------------------------

test("joinGroup, groupCreated and initiateGroupVideoCall by a non-member are refused with not_found", async () => {
  await contained(async () => {
    const member = [];
    member.push(await refused(mallory, "joinGroup", GROUP.id, "not_found"));
    member.push(await refused(mallory, "joinGroup", { groupId: GROUP.id }, "not_found"));
    member.push(
      await refused(mallory, "groupCreated", { groupId: GROUP.id, memberIds: Object.values(USERS).map((u) => u.id) }, "not_found"),
    );
    member.push(await refused(mallory, "initiateGroupVideoCall", { groupId: GROUP.id, isGroupCall: true }, "not_found"));
    // A group that does not exist looks exactly the same.
    const none = [
      await refused(mallory, "joinGroup", "no-such-group", "not_found"),
      await refused(mallory, "joinGroup", { groupId: "no-such-group" }, "not_found"),
      await refused(mallory, "groupCreated", { groupId: "no-such-group", memberIds: [] }, "not_found"),
      await refused(mallory, "initiateGroupVideoCall", { groupId: "no-such-group" }, "not_found"),
    ];
    const strip = ({ groupId, ...rest }) => rest;
    assert.deepEqual(member.map(strip), none.map(strip), "a foreign group is indistinguishable from a missing one");
  });
});

// --- other people's calls ---------------------------------------------------------

test("an outsider knowing the callId and roomName cannot accept, reject or end a ringing call", async () => {
  const call = await aliceCallsBob();
  await contained(() => malloryControls(call));
  // The call is intact: bob can still answer it.
  const accepted = next(alice, "videoCallAccepted");
  const ack = await ask(bob, "acceptVideoCall", { callId: call.callId });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.equal(ack.state, "active");
  assert.equal((await accepted).acceptedBy, USERS.bob.id);
});

test("an outsider knowing the callId and roomName cannot accept, reject or end an active call", async () => {
  const call = await aliceCallsBob();
  const accepted = next(alice, "videoCallAccepted");
  assert.equal((await ask(bob, "acceptVideoCall", { callId: call.callId })).ok, true);
  await accepted;
  await contained(() => malloryControls({ ...call, state: "active" }));
  // The call is intact: alice hangs up and both sides hear of it.
  const ended = nextOnEach([alice, bob], "videoCallEnded");
  assert.equal((await ask(alice, "endVideoCall", { roomName: call.roomName })).ok, true);
  for (const end of await ended) {
    assert.equal(end.callId, call.callId);
    assert.equal(end.reason, "hangup");
    assert.equal(end.endedBy, USERS.alice.id);
  }
});

// --- malformed fields ---------------------------------------------------------------

/** [event, payload with the bad value in an id field] for each bad value. */
function badIdPayloads(bad) {
  return [
    ["userOnline", bad],
    ["userOnline", { userId: bad }],
    ["joinVideoRoom", { userId: bad }],
    ["joinGroup", bad],
    ["joinGroup", { groupId: bad }],
    ["leaveGroup", { groupId: bad }],
    ["groupCreated", { groupId: bad, memberIds: [USERS.mallory.id] }],
    ["initiateVideoCall", { receiverId: bad }],
    ["initiateVideoCall", { receiverId: USERS.bob.id, callerId: bad }],
    ["initiateVideoCall", { receiverId: USERS.bob.id, roomName: bad }],
    ["initiateGroupVideoCall", { groupId: bad }],
    ["initiateGroupVideoCall", { groupId: GROUP.id, roomName: bad }],
    ...CALL_CONTROLS.flatMap((event) => [
      [event, { callId: bad }],
      [event, { roomName: bad }],
      [event, { callerId: bad }],
      [event, { receiverId: bad }],
      [event, { groupId: bad }],
    ]),
  ];
}

for (const [name, bad] of [
  ['{"$ne": null}', { $ne: null }],
  ["a number", 42],
  ["an array", [USERS.alice.id]],
]) {
  test(`id fields carrying ${name} are refused with bad_request`, async () => {
    await contained(async () => {
      for (const [event, payload] of badIdPayloads(bad)) await refused(mallory, event, payload, "bad_request");
    });
  });
}

test("malformed id strings and oversized text fields are refused with bad_request", async () => {
  await contained(async () => {
    for (const [event, payload] of [
      ["userOnline", "alice'; DROP TABLE users"],
      ["joinGroup", "group:507f1f77bcf86cd799439011"],
      ["joinGroup", "a".repeat(65)],
      ["initiateVideoCall", { receiverId: `user:${USERS.bob.id}` }],
      ["initiateVideoCall", { receiverId: USERS.bob.id, roomName: "../../room" }],
      ["initiateVideoCall", { receiverId: USERS.bob.id, callerName: TEN_KB }],
      ["initiateVideoCall", { receiverId: USERS.bob.id, timestamp: TEN_KB }],
      ["initiateVideoCall", { receiverId: USERS.bob.id, isGroupCall: "false" }],
      ["initiateGroupVideoCall", { groupId: GROUP.id, groupName: TEN_KB }],
      ["acceptVideoCall", { callId: "not-a-uuid" }],
      ["rejectVideoCall", { callId: "1" }],
      ["endVideoCall", { callId: "00000000-0000-0000-0000-000000000000", endForAll: "yes" }],
      ["endVideoCall", { roomName: "x" }],
    ]) {
      await refused(mallory, event, payload, "bad_request");
    }
  });
});

// --- junk payloads --------------------------------------------------------------------

/**
 * The code each event answers a junk payload with. A null payload counts as
 * "no payload": userOnline and joinVideoRoom then simply act for the sender
 * (docs/protocol.md: "the user's own id ..., or nothing"), call controls look
 * for the sender's only live call (mallory has none: not_found), and the rest
 * miss a required field.
 */
function junkOutcome(event, kind) {
  if (kind !== "null") return "bad_request";
  if (event === "userOnline" || event === "joinVideoRoom") return "ok";
  if (CALL_CONTROLS.includes(event)) return "not_found";
  return "bad_request";
}

test("each client event answers null, a number, an array and a 10 KB string by ack and the server stays up", async () => {
  await contained(async () => {
    for (const event of CLIENT_EVENTS) {
      for (const [kind, payload] of [
        ["null", null],
        ["number", 42],
        ["array", ["x", { $ne: null }]],
        ["10 KB string", TEN_KB],
      ]) {
        const expected = junkOutcome(event, kind);
        if (expected === "ok") {
          const ack = await ask(mallory, event, payload);
          assert.equal(ack.ok, true, `${event}(${kind}) acts for the sender: ${JSON.stringify(ack)}`);
        } else {
          await refused(mallory, event, payload, expected);
        }
      }
    }
    // An event callgate does not handle, with junk, is answered too (as event "unknown").
    const notice = next(mallory, "error");
    const ack = await ask(mallory, "sendGroupMessage", TEN_KB);
    assert.equal(ack.error?.code, "bad_request", JSON.stringify(ack));
    assert.deepEqual(await notice, { ...ack.error, event: "unknown" });
    assertNoEcho(ack, "sendGroupMessage");
  });
  assert.equal(server.child.exitCode, null, "the server is still running");
});

test("a client that sends no ack still learns of a refusal through the error event", async () => {
  await contained(async () => {
    const notice = next(mallory, "error");
    mallory.emit("joinGroup", GROUP.id);
    const failure = await notice;
    assert.equal(failure.code, "not_found");
    assert.equal(failure.event, "joinGroup");

    const callNotice = next(mallory, "videoCallFailed");
    mallory.emit("initiateVideoCall", { receiverId: USERS.bob.id, callerId: USERS.alice.id });
    assert.equal((await callNotice).code, "forbidden");
  });
});

// --- afterwards -------------------------------------------------------------------------

test("after every attack a fresh connection still logs in, connects and places a call", async () => {
  assert.equal(server.child.exitCode, null, "the server is still running");
  const fresh = await online(server.url, USERS.carol);
  try {
    const ack = await ask(fresh, "userOnline", USERS.carol.id);
    assert.deepEqual(ack, { ok: true, groups: [GROUP.id] });

    const ringing = next(bob, "incomingVideoCall");
    const call = await ask(fresh, "initiateVideoCall", { receiverId: USERS.bob.id });
    assert.equal(call.ok, true, JSON.stringify(call));
    started.push(call.callId);
    assert.equal((await ringing).callerName, USERS.carol.displayName);

    const cancelled = next(bob, "videoCallEnded");
    assert.equal((await ask(fresh, "endVideoCall", { callId: call.callId })).ok, true);
    assert.equal((await cancelled).reason, "cancelled");
    // Call replies go to the calling socket only (and it asked for an ack, so no videoCallRinging either):
    // carol's first socket hears nothing.
    assert.deepEqual(eventNames(carol), []);
  } finally {
    fresh.disconnect();
  }
  assert.deepEqual(callEvents(mallory), [], "the attacker never received a call event");
});
