// Replays the seed frontend exactly as it behaves: it connects with
// auth: { token }, announces itself with userOnline right on connect, sends its
// own payload shapes (the caller never knows a callId; it names calls by
// roomName), echoes the incomingVideoCall payload back to accept or reject,
// and never asks for an ack. It only listens for events.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  startServer,
  login,
  connect,
  connected,
  record,
  next,
  nextOnEach,
  ask,
  mark,
  callEvents,
  USERS,
  GROUP,
  UUID_RE,
  FAILURE_EVENTS,
} from "./harness.mjs";

let server;
/** Mallory, in no call and not in the group: connected throughout, must see nothing. */
let outsider;
/** Sockets opened by the running test, closed after it. */
let opened = [];

before(async () => {
  server = await startServer();
  outsider = await seedClient(USERS.mallory);
});

afterEach(async () => {
  await hangUpLeftovers(opened);
  for (const s of opened) s.disconnect();
  opened = [];
});

after(async () => {
  outsider?.disconnect();
  await server?.stop();
});

// --- the seed frontend -----------------------------------------------------

/** Logs in and connects like the seed: userOnline (and joinVideoRoom) on connect, no acks. */
async function seedClient(user) {
  const { token } = await login(server.url, user);
  const socket = record(connect(server.url, token));
  socket.user = user;
  socket.on("connect", () => {
    socket.emit("userOnline", user.id);
    socket.emit("joinVideoRoom", { userId: user.id });
  });
  await connected(socket);
  // Kept to check that no payload ever carries a socket or engine id
  // (not `socket.ids`: socket.io-client keeps its ack counter there).
  socket.sessionIds = [socket.id, socket.io.engine.id];
  return socket;
}

/** A seed client opened for the running test only. */
async function device(user) {
  const socket = await seedClient(user);
  opened.push(socket);
  return socket;
}

/** The seed's `initiateVideoCall` payload: its own roomName, no callId. */
function seedCallData(caller, callee) {
  return {
    roomName: `call-${randomUUID()}`,
    callerId: caller.id,
    callerName: caller.displayName,
    receiverId: callee.id,
    receiverName: callee.displayName,
    isGroupCall: false,
    timestamp: new Date().toISOString(),
  };
}

/** The caller clicks "Video Call" in a 1:1 chat. Returns what it sent. */
function placeCall(caller, callee, overrides = {}) {
  const callData = { ...seedCallData(caller.user, callee), ...overrides };
  caller.emit("initiateVideoCall", callData);
  return callData;
}

/** The caller clicks "Video Call" in a group chat. Returns what it sent. */
function placeGroupCall(caller, group = GROUP) {
  const callData = {
    roomName: `call-${randomUUID()}`,
    callerId: caller.user.id,
    callerName: caller.user.displayName,
    isGroupCall: true,
    groupId: group.id,
    timestamp: new Date().toISOString(),
  };
  caller.emit("initiateGroupVideoCall", callData);
  return callData;
}

/** The caller hangs up: the seed sends what it knows, which is no callId. */
function callerHangsUp(caller, callData) {
  const body = callData.isGroupCall
    ? { roomName: callData.roomName, callerId: callData.callerId, groupId: callData.groupId, isGroupCall: true }
    : { roomName: callData.roomName, callerId: callData.callerId, receiverId: callData.receiverId, isGroupCall: false };
  caller.emit("endVideoCall", body);
}

/** The callee answers: the seed echoes the incomingVideoCall payload back. */
const accepts = (callee, incoming) => callee.emit("acceptVideoCall", incoming);
const rejects = (callee, incoming) => callee.emit("rejectVideoCall", incoming);

// --- assertions ------------------------------------------------------------

/** A 1:1 call record: ids and names from the directory, a server-made callId. */
function assertDirectRecord(record, { caller, callee, roomName, state }) {
  assert.match(record.callId, UUID_RE);
  assert.equal(record.roomName, roomName);
  assert.equal(record.callerId, caller.id);
  assert.equal(record.callerName, caller.displayName);
  assert.equal(record.receiverId, callee.id);
  assert.equal(record.receiverName, callee.displayName);
  assert.equal(record.isGroupCall, false);
  assert.equal(record.groupId, undefined);
  assert.equal(record.state, state);
  assertRecentTimestamp(record.timestamp);
}

/** A group call record for GROUP started by `caller`. */
function assertGroupRecord(record, { caller, roomName, state }) {
  assert.match(record.callId, UUID_RE);
  assert.equal(record.roomName, roomName);
  assert.equal(record.callerId, caller.id);
  assert.equal(record.callerName, caller.displayName);
  assert.equal(record.isGroupCall, true);
  assert.equal(record.groupId, GROUP.id);
  assert.equal(record.groupName, GROUP.name);
  assert.equal(record.receiverId, undefined);
  assert.equal(record.state, state);
  assertRecentTimestamp(record.timestamp);
}

function assertRecentTimestamp(timestamp) {
  const at = Date.parse(timestamp);
  assert.ok(Number.isFinite(at), `timestamp ${timestamp} parses`);
  assert.ok(Math.abs(Date.now() - at) < 60_000, `timestamp ${timestamp} is the server's now`);
}

/** A group participant event (joined, declined, left). */
function assertParticipant(payload, callId, user) {
  assert.equal(payload.callId, callId);
  assert.equal(payload.groupId, GROUP.id);
  assert.equal(payload.userId, user.id);
  assert.equal(payload.userName, user.displayName);
}

/** Keys anywhere in a payload. */
function keysOf(value, out = []) {
  if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      keysOf(v, out);
    }
  }
  return out;
}

/**
 * After a seed flow: the seed never caused a failure, no payload carries a
 * socket id (the naive backend used socket.id as callId), and the outsider saw
 * nothing.
 */
function assertClean(sockets) {
  const ids = [...sockets, outsider].flatMap((s) => s.sessionIds);
  for (const s of sockets) {
    const failures = s.received.filter((e) => FAILURE_EVENTS.includes(e.event));
    assert.deepEqual(failures, [], `${s.user.username} got no failure events`);
    for (const { event, payload } of s.received) {
      const text = JSON.stringify(payload ?? null);
      for (const id of ids) assert.ok(!text.includes(id), `${event} to ${s.user.username} carries a socket id: ${text}`);
      const socketKeys = keysOf(payload).filter((k) => /socket/i.test(k));
      assert.deepEqual(socketKeys, [], `${event} to ${s.user.username} has no socket fields`);
    }
  }
  assert.deepEqual(outsider.received, [], "the outsider received nothing");
}

/** Ends, with acks, any call a failed test left behind so the next test starts clean. */
async function hangUpLeftovers(sockets) {
  const callIds = new Set(sockets.flatMap((s) => callEvents(s).map((e) => e.payload?.callId).filter(Boolean)));
  for (const callId of callIds) {
    for (const s of sockets) {
      if (!s.connected) continue;
      await ask(s, "endVideoCall", { callId, endForAll: true }).catch(() => {});
      await ask(s, "endVideoCall", { callId }).catch(() => {});
    }
  }
}

// --- 1:1 calls ---------------------------------------------------------------

test("seed 1:1 call: bob rings, accepts, alice hangs up and both get videoCallEnded hangup", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);

  const ringing = next(bob, "incomingVideoCall");
  const sent = placeCall(alice, USERS.bob);
  const incoming = await ringing;
  assertDirectRecord(incoming, { caller: USERS.alice, callee: USERS.bob, roomName: sent.roomName, state: "ringing" });

  const accepted = next(alice, "videoCallAccepted");
  accepts(bob, incoming);
  const acceptance = await accepted;
  assertDirectRecord(acceptance, { caller: USERS.alice, callee: USERS.bob, roomName: sent.roomName, state: "active" });
  assert.equal(acceptance.callId, incoming.callId);
  assert.equal(acceptance.acceptedBy, USERS.bob.id);

  const ended = nextOnEach([alice, bob], "videoCallEnded");
  callerHangsUp(alice, sent);
  for (const end of await ended) {
    assert.equal(end.callId, incoming.callId);
    assert.equal(end.roomName, sent.roomName);
    assert.equal(end.reason, "hangup");
    assert.equal(end.endedBy, USERS.alice.id);
  }
  assertClean([alice, bob]);
});

test("seed 1:1 call: the callee hangs up with a payload naming no call (matched by its only live call)", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);
  const ringing = next(bob, "incomingVideoCall");
  const sent = placeCall(alice, USERS.bob);
  const incoming = await ringing;
  const accepted = next(alice, "videoCallAccepted");
  accepts(bob, incoming);
  await accepted;

  const ended = nextOnEach([alice, bob], "videoCallEnded");
  bob.emit("endVideoCall", { callerId: USERS.alice.id, receiverId: USERS.bob.id, isGroupCall: false });
  for (const end of await ended) {
    assert.equal(end.callId, incoming.callId);
    assert.equal(end.roomName, sent.roomName);
    assert.equal(end.reason, "hangup");
    assert.equal(end.endedBy, USERS.bob.id);
  }
  assertClean([alice, bob]);
});

test("seed 1:1 call: names in every event come from the directory, not from the caller's payload", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);
  const ringing = next(bob, "incomingVideoCall");
  const sent = placeCall(alice, USERS.bob, {
    callerName: "The CEO (urgent)",
    receiverName: "Somebody Else",
    timestamp: "2001-01-01T00:00:00.000Z",
  });
  const incoming = await ringing;
  assert.equal(incoming.callerName, USERS.alice.displayName);
  assert.equal(incoming.receiverName, USERS.bob.displayName);
  assert.notEqual(incoming.timestamp, sent.timestamp);
  assertDirectRecord(incoming, { caller: USERS.alice, callee: USERS.bob, roomName: sent.roomName, state: "ringing" });

  const cancelled = next(bob, "videoCallEnded");
  callerHangsUp(alice, sent);
  assert.equal((await cancelled).callerName, USERS.alice.displayName);
  assertClean([alice, bob]);
});

test("seed 1:1 call: bob rejects by echoing the invitation and alice gets videoCallRejected declined", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);
  const ringing = next(bob, "incomingVideoCall");
  const sent = placeCall(alice, USERS.bob);
  const incoming = await ringing;

  const rejected = next(alice, "videoCallRejected");
  const quiet = mark([bob]);
  rejects(bob, incoming);
  const rejection = await rejected;
  assertDirectRecord(rejection, { caller: USERS.alice, callee: USERS.bob, roomName: sent.roomName, state: "ringing" });
  assert.equal(rejection.callId, incoming.callId);
  assert.equal(rejection.reason, "declined");
  const [toBob] = await quiet();
  assert.deepEqual(toBob, [], "the rejecting socket gets no further events");
  assertClean([alice, bob]);
});

test("seed 1:1 call: alice cancels while ringing and bob gets videoCallEnded cancelled", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);
  const ringing = next(bob, "incomingVideoCall");
  const sent = placeCall(alice, USERS.bob);
  const incoming = await ringing;

  const cancelled = next(bob, "videoCallEnded");
  callerHangsUp(alice, sent);
  const end = await cancelled;
  assert.equal(end.callId, incoming.callId);
  assert.equal(end.roomName, sent.roomName);
  assert.equal(end.reason, "cancelled");

  // The call is gone: the same room can ring again.
  const again = next(bob, "incomingVideoCall");
  placeCall(alice, USERS.bob, { roomName: sent.roomName });
  const second = await again;
  assert.notEqual(second.callId, incoming.callId);
  const cancelledAgain = next(bob, "videoCallEnded");
  callerHangsUp(alice, sent);
  assert.equal((await cancelledAgain).reason, "cancelled");
  assertClean([alice, bob]);
});

// --- a callee with two devices ---------------------------------------------------

test("seed 1:1 call to two devices: both ring, one accepts, the other gets videoCallEnded answered_elsewhere", async () => {
  const alice = await device(USERS.alice);
  const phone = await device(USERS.bob);
  const laptop = await device(USERS.bob);

  const ringing = nextOnEach([phone, laptop], "incomingVideoCall");
  const sent = placeCall(alice, USERS.bob);
  const [onPhone, onLaptop] = await ringing;
  assert.deepEqual(onPhone, onLaptop, "both devices get the same invitation");
  assertDirectRecord(onPhone, { caller: USERS.alice, callee: USERS.bob, roomName: sent.roomName, state: "ringing" });

  const accepted = next(alice, "videoCallAccepted");
  const elsewhere = next(phone, "videoCallEnded");
  const quiet = mark([laptop]);
  accepts(laptop, onLaptop);
  assert.equal((await accepted).acceptedBy, USERS.bob.id);
  const end = await elsewhere;
  assert.equal(end.callId, onPhone.callId);
  assert.equal(end.reason, "answered_elsewhere");
  const [toLaptop] = await quiet();
  assert.deepEqual(toLaptop, [], "the answering device keeps its call");

  const hungUp = nextOnEach([alice, laptop], "videoCallEnded");
  callerHangsUp(alice, sent);
  for (const e of await hungUp) assert.equal(e.reason, "hangup");
  assertClean([alice, phone, laptop]);
});

test("seed 1:1 call to two devices: one rejects, the other gets videoCallEnded rejected_elsewhere", async () => {
  const alice = await device(USERS.alice);
  const phone = await device(USERS.bob);
  const laptop = await device(USERS.bob);

  const ringing = nextOnEach([phone, laptop], "incomingVideoCall");
  placeCall(alice, USERS.bob);
  const [onPhone] = await ringing;

  const rejected = next(alice, "videoCallRejected");
  const elsewhere = next(laptop, "videoCallEnded");
  rejects(phone, onPhone);
  assert.equal((await rejected).reason, "declined");
  const end = await elsewhere;
  assert.equal(end.callId, onPhone.callId);
  assert.equal(end.reason, "rejected_elsewhere");
  assertClean([alice, phone, laptop]);
});

// --- group calls ------------------------------------------------------------------

test("seed group call: bob and carol ring, bob joins, carol declines, alice leaves, bob ends it last", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);
  const carol = await device(USERS.carol);

  const ringing = nextOnEach([bob, carol], "incomingVideoCall");
  const sent = placeGroupCall(alice);
  const [toBob, toCarol] = await ringing;
  assertGroupRecord(toBob, { caller: USERS.alice, roomName: sent.roomName, state: "ringing" });
  assert.deepEqual(toCarol, toBob, "every member gets the same invitation");
  const callId = toBob.callId;

  const accepted = next(alice, "videoCallAccepted");
  const joined = next(alice, "groupCallParticipantJoined");
  accepts(bob, toBob);
  const acceptance = await accepted;
  assertGroupRecord(acceptance, { caller: USERS.alice, roomName: sent.roomName, state: "active" });
  assert.equal(acceptance.acceptedBy, USERS.bob.id);
  assertParticipant(await joined, callId, USERS.bob);

  const declined = next(alice, "groupCallParticipantDeclined");
  const quietBob = mark([bob]);
  rejects(carol, toCarol);
  assertParticipant(await declined, callId, USERS.carol);
  const [toBobAfterDecline] = await quietBob();
  assert.deepEqual(toBobAfterDecline, [], "a decline is news for the caller only");

  const left = next(bob, "groupCallParticipantLeft");
  callerHangsUp(alice, sent);
  assertParticipant(await left, callId, USERS.alice);

  const quiet = mark([alice, bob, carol]);
  bob.emit("endVideoCall", toBob);
  for (const since of await quiet()) assert.deepEqual(since, [], "the last one out ends it silently");

  // The call is gone: a new group call rings everyone again, with a new id.
  const again = nextOnEach([bob, carol], "incomingVideoCall");
  const second = placeGroupCall(alice);
  const [bobAgain] = await again;
  assert.notEqual(bobAgain.callId, callId);
  assert.equal(bobAgain.roomName, second.roomName);

  // The caller hangs up before anyone answers: the invitations end.
  const cancelled = nextOnEach([bob, carol], "videoCallEnded");
  callerHangsUp(alice, second);
  for (const end of await cancelled) {
    assert.equal(end.callId, bobAgain.callId);
    assert.equal(end.reason, "ended");
  }
  assertClean([alice, bob, carol]);
});

test("seed group call: bob and carol join, each join is announced, alice ends it for all", async () => {
  const alice = await device(USERS.alice);
  const bob = await device(USERS.bob);
  const carol = await device(USERS.carol);

  const ringing = nextOnEach([bob, carol], "incomingVideoCall");
  const sent = placeGroupCall(alice);
  const [toBob, toCarol] = await ringing;
  const callId = toBob.callId;

  const bobJoined = next(alice, "groupCallParticipantJoined");
  const accepted = next(alice, "videoCallAccepted");
  accepts(bob, toBob);
  assertParticipant(await bobJoined, callId, USERS.bob);
  await accepted;

  const carolJoined = nextOnEach([alice, bob], "groupCallParticipantJoined");
  const quietAlice = mark([alice]);
  accepts(carol, toCarol);
  for (const joined of await carolJoined) assertParticipant(joined, callId, USERS.carol);
  const [toAlice] = await quietAlice();
  assert.deepEqual(
    toAlice.filter((e) => e.event === "videoCallAccepted"),
    [],
    "only the first answer sends videoCallAccepted",
  );

  const ended = nextOnEach([bob, carol], "videoCallEnded");
  alice.emit("endVideoCall", { ...sent, endForAll: true });
  for (const end of await ended) {
    assert.equal(end.callId, callId);
    assert.equal(end.groupId, GROUP.id);
    assert.equal(end.reason, "ended");
  }
  assertClean([alice, bob, carol]);
});
