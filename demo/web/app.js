// The callgate demo page: log in, see who is online, call a person or a
// group, answer, decline, hang up. Read it top to bottom as an example of a
// callgate client; every server event it handles is in docs/protocol.md.
//
//   1. Session     POST /auth/login; the token stays in sessionStorage (per tab, never in a URL)
//   2. Directory   GET /groups and GET /contacts (with presence), polled
//   3. Socket      connect with { auth: { token } }; userOnline; the call events
//   4. Calls       one card per call, driven only by what the server says
//   5. Outcomes    every refusal and ending in plain words
//   6. Jitsi       the meeting, when the server names a Jitsi domain
//   7. Rendering

import { Socket } from "./socketio.js";

const $ = (id) => document.getElementById(id);

// ---- 1. Session --------------------------------------------------------------
//
// sessionStorage, not localStorage: each tab logs in on its own (so two tabs
// can be two people, or the same person on two "devices"), and a reload keeps
// the session so the page can pick up a call in progress.

const SESSION_KEY = "callgate-demo-session";

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (s && s.expiresAt * 1000 > Date.now() + 5000) return s; // expiresAt: Unix seconds
  } catch {
    // nothing stored, or not ours
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

async function logIn(username, password) {
  const res = await fetch("/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const code = body.error?.code;
    if (code === "invalid_credentials") throw new Error("Wrong username or password.");
    if (code === "rate_limited") {
      throw new Error(`Too many login attempts. Try again in ${res.headers.get("retry-after") ?? "a few"} s.`);
    }
    throw new Error(body.error?.message ?? `Login failed (HTTP ${res.status}).`);
  }
  // body: { token, expiresAt (Unix seconds), user: { id, username, displayName } }
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(body));
  return body;
}

async function api(path) {
  const res = await fetch(path, { headers: { authorization: `Bearer ${state.session.token}` } });
  if (res.status === 401) {
    logOut("Your session has expired. Log in again.");
    throw new Error("unauthorized");
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// ---- Page state ------------------------------------------------------------------

const state = {
  session: null, // { token, expiresAt, user }
  socket: null,
  contacts: new Map(), // user id -> { id, username, displayName, online }
  groups: [], // [{ id, name, owner, members }]
  calls: new Map(), // call id -> call (see callFrom)
  liveAfterConnect: new Set(), // call ids activeVideoCalls named since the last (re)connect
  pollTimer: null,
};

const me = () => state.session.user;
const nameOf = (id) => (id === me().id ? "you" : state.contacts.get(id)?.displayName ?? "someone");

// ---- 2. Directory ------------------------------------------------------------------
//
// callgate has no presence event: a frontend asks GET /contacts (everyone who
// shares a group with you, with `online`) when it needs to, here every few
// seconds and after every call event.

const POLL_MS = 4000;

async function refreshDirectory() {
  if (!state.session) return;
  try {
    const [groups, contacts] = await Promise.all([api("/groups"), api("/contacts")]);
    state.groups = groups;
    state.contacts = new Map(contacts.map((c) => [c.id, c]));
    renderDirectory();
  } catch (err) {
    console.warn("directory refresh failed", err);
  }
}

// ---- 3. Socket -----------------------------------------------------------------------

function connectSocket() {
  // auth is a function, so every reconnect sends the token we hold now.
  // The server writes its socketio.path into the page (default /socket.io).
  const path = document.querySelector('meta[name="callgate-socketio-path"]').content;
  const socket = new Socket(`${path}/`, { auth: () => ({ token: state.session.token }) });
  state.socket = socket;

  socket.on("connect", async () => {
    setConnection("ok", "connected");
    // What the chat frontend sends right after connecting; the server syncs our
    // group rooms. Its ack comes after activeVideoCalls (one socket delivers in
    // order), so once it is here we know which of our calls are still live.
    const reply = await ask("userOnline", me().id);
    if (reply.ok) forgetCallsNotLive();
    refreshDirectory();
  });
  socket.on("disconnect", () => {
    setConnection("warn", "disconnected");
    state.liveAfterConnect = new Set();
  });
  socket.on("reconnecting", ({ delayMs }) => setConnection("warn", `reconnecting in ${Math.ceil(delayMs / 1000)} s`));
  socket.on("connect_error", (err) => {
    if (err.message === "unauthorized" || err.message === "token_expired") {
      logOut("Your session is no longer valid. Log in again.");
    } else if (err.message === "websocket_failed") {
      setConnection(
        "bad",
        `cannot connect: is the server up, and is ${location.origin} in server.allowed_origins?`,
      );
    } else if (err.message === "too_many_connections") {
      setConnection("bad", "too many open connections for this user");
    } else {
      setConnection("bad", `refused: ${err.message}`);
    }
  });

  // Server -> client events (docs/protocol.md, "Server → client events").
  socket.on("incomingVideoCall", (record) => {
    upsertCall(record, "ringing");
    const where = record.isGroupCall ? ` in ${record.groupName}` : "";
    say(`${record.callerName} is calling you${where}.`);
  });
  socket.on("videoCallAccepted", (record) => {
    const call = upsertCall(record, "active");
    openMeeting(call);
    // Group calls announce each joiner with groupCallParticipantJoined.
    if (!call.isGroupCall) say(`${call.peerName} answered.`, "good");
  });
  socket.on("videoCallRejected", (record) => endCall(record, "declined"));
  socket.on("videoCallEnded", (record) => endCall(record, record.reason, record.endedBy));
  socket.on("videoCallMissed", (record) => endCall(record, "missed"));
  socket.on("groupCallParticipantJoined", (p) => participant(p, "joined"));
  socket.on("groupCallParticipantLeft", (p) => participant(p, "left"));
  socket.on("groupCallParticipantDeclined", (p) => participant(p, "declined"));
  socket.on("activeVideoCalls", (records) => {
    // After a reload (or a reconnect): the server tells us which calls are still live.
    for (const record of records) {
      const call = upsertCall(record, record.state);
      const which = call.isGroupCall ? `call in ${call.groupName}` : `call with ${call.peerName}`;
      say(record.state === "active" ? `Your ${which} is back after the reload.` : `Your ${which} is still ringing.`);
      if (record.state === "active") restoreMeeting(call);
    }
  });
  socket.on("tokenExpired", () => logOut("Your session has expired. Log in again."));
  socket.on("serverShutdown", () => say("The server is shutting down. The page reconnects when it is back.", "bad"));
  // Refusals arrive as acks below; the same refusal is also sent as an event
  // (videoCallFailed / error) for clients that send no ack. We use acks only.

  socket.connect();
}

/** Sends a call event and waits for its ack; returns { ok, ... }, never throws. */
async function ask(event, payload) {
  try {
    return await state.socket.request(event, payload);
  } catch (err) {
    return { ok: false, error: { code: err.message, message: err.message } };
  }
}

// ---- 4. Calls ---------------------------------------------------------------------------
//
// A call is what the server last said about it (its record), plus what this
// page needs to draw it. The page never decides a call's state on its own.

function callFrom(record, previous) {
  const outgoing = record.callerId === me().id;
  const peerName = record.isGroupCall
    ? record.groupName
    : outgoing
      ? record.receiverName
      : record.callerName;
  return {
    ...previous,
    id: record.callId,
    roomName: record.roomName,
    isGroupCall: record.isGroupCall,
    groupName: record.groupName,
    callerId: record.callerId,
    callerName: record.callerName,
    receiverId: record.receiverId,
    startedAt: record.timestamp, // when the call was placed (server clock)
    outgoing,
    peerName,
    state: previous?.state ?? "ringing", // "ringing" | "active" | "ended"
    participants: previous?.participants ?? new Map(),
    notes: previous?.notes ?? [],
    jitsi: record.jitsi ?? previous?.jitsi ?? null,
    meeting: previous?.meeting ?? null, // what the meeting area shows
    outcome: previous?.outcome ?? null, // { text, tone } once ended
  };
}

function upsertCall(record, newState) {
  const previous = state.calls.get(record.callId);
  if (previous?.state === "ended") return previous; // an ended call stays ended
  const call = callFrom(record, previous);
  state.liveAfterConnect.add(call.id); // the server just spoke of it: it is live
  if (newState && newState !== call.state) {
    call.state = newState;
    call.notes = []; // what was said while ringing is over
  }
  if (record.acceptedBy && record.acceptedBy !== me().id) call.participants.set(record.acceptedBy, nameOf(record.acceptedBy));
  state.calls.set(call.id, call);
  render();
  return call;
}

async function callPerson(contact) {
  const reply = await ask("initiateVideoCall", { receiverId: contact.id });
  if (!reply.ok) return refused(reply, contact.displayName);
  if (reply.crossed) {
    // They were calling us at the same moment: the server took our call as answering theirs.
    const call = upsertCall(reply, "active");
    say(`${contact.displayName} was calling you at the same time: you are now in their call.`, "good");
    return openMeeting(call);
  }
  upsertCall(reply, "ringing");
  say(`Calling ${contact.displayName}.`);
}

async function callGroup(group) {
  const reply = await ask("initiateGroupVideoCall", { groupId: group.id });
  if (!reply.ok) return refused(reply, group.name);
  if (reply.alreadyActive) {
    // One live call per group: the server rang nobody and tells us about the one going on.
    const call = upsertCall(reply, "ringing");
    call.alreadyActive = true;
    say(`A call is already going on in ${group.name}.`);
    return render();
  }
  upsertCall(reply, "ringing");
  say(`Calling ${group.name}.`);
}

async function accept(call) {
  const reply = await ask("acceptVideoCall", { callId: call.id });
  if (!reply.ok) return refused(reply, call.peerName, call);
  const updated = upsertCall(reply, "active");
  updated.alreadyActive = false;
  for (const id of reply.participants ?? []) if (id !== me().id) updated.participants.set(id, nameOf(id));
  say(call.isGroupCall ? `You joined the call in ${call.groupName}.` : `You answered ${call.peerName}.`, "good");
  openMeeting(updated);
}

async function decline(call) {
  const reply = await ask("rejectVideoCall", { callId: call.id });
  if (!reply.ok) return refused(reply, call.peerName, call);
  endCall(reply, "you_declined");
}

async function hangUp(call, endForAll = false) {
  call.endingForAll = endForAll; // so the videoCallEnded that may come before the ack reads right
  const reply = await ask("endVideoCall", { callId: call.id, endForAll });
  if (!reply.ok) return refused(reply, call.peerName, call);
  // The server also sends videoCallEnded; whichever comes first ends the card.
  if (call.isGroupCall) endCall(reply, endForAll ? "you_ended_for_all" : "you_left");
  else endCall(reply, call.state === "ringing" && call.outgoing ? "you_cancelled" : "hangup", me().id);
}

/** After a reconnect: a call the server no longer lists ended while we were away. */
function forgetCallsNotLive() {
  for (const call of [...state.calls.values()]) {
    if (call.state !== "ended" && !state.liveAfterConnect.has(call.id)) endCall({ callId: call.id }, "while_away");
  }
}

function participant({ callId, userId, userName }, what) {
  const call = state.calls.get(callId);
  if (!call || call.state === "ended") return;
  if (what === "joined") call.participants.set(userId, userName);
  if (what === "left") call.participants.delete(userId);
  note(call, `${userName} ${what}.`);
  say(`${userName} ${what} the call in ${call.groupName}.`);
  render();
}

function endCall(record, reason, endedBy) {
  const call = state.calls.get(record.callId) ?? callFrom(record);
  if (call.state === "ended") return;
  if (reason === "replaced") {
    // A redial: the caller called again while this call rang; the new call has its own card.
    closeMeeting(call);
    state.calls.delete(call.id);
    return render();
  }
  call.state = "ended";
  call.outcome = outcome(call, reason, endedBy);
  closeMeeting(call);
  state.calls.set(call.id, call);
  say(call.outcome.text, call.outcome.tone);
  // Keep the last few ended calls on screen, newest first.
  const ended = [...state.calls.values()].filter((c) => c.state === "ended");
  for (const old of ended.slice(0, -3)) state.calls.delete(old.id);
  render();
  refreshDirectory();
}

// ---- 5. Outcomes in plain words --------------------------------------------------------------

/** The words for a call that ended, by videoCallEnded.reason (and our own actions). */
function outcome(call, reason, endedBy) {
  const peer = call.peerName;
  const caller = call.callerName;
  switch (reason) {
    case "declined":
      return call.isGroupCall
        ? { text: `Nobody in ${call.groupName} took the call: everyone declined.`, tone: "bad" }
        : { text: `${peer} declined the call.`, tone: "bad" };
    case "while_away":
      return { text: "This call ended while you were disconnected.", tone: "neutral" };
    case "you_declined":
      return { text: `You declined the call from ${caller}.`, tone: "neutral" };
    case "you_cancelled":
      return { text: `You cancelled the call to ${peer}.`, tone: "neutral" };
    case "you_left":
      return { text: `You left the call in ${call.groupName}.`, tone: "neutral" };
    case "you_ended_for_all":
      return { text: `You ended the call in ${call.groupName} for everyone.`, tone: "neutral" };
    case "cancelled":
      return { text: `${caller} cancelled the call before you answered.`, tone: "neutral" };
    case "hangup":
      return endedBy === me().id
        ? { text: `You hung up. The call with ${peer} has ended.`, tone: "neutral" }
        : { text: `${call.outgoing || call.isGroupCall ? peer : caller} hung up. The call has ended.`, tone: "neutral" };
    case "ended":
      return call.endingForAll
        ? { text: `You ended the call in ${call.groupName} for everyone.`, tone: "neutral" }
        : { text: `The call in ${call.groupName} has ended.`, tone: "neutral" };
    case "answered_elsewhere":
      return { text: "You answered this call on another device (another tab).", tone: "neutral" };
    case "rejected_elsewhere":
      return { text: "You declined this call on another device (another tab).", tone: "neutral" };
    case "missed":
      return { text: `You missed a call from ${caller}.`, tone: "bad" };
    case "timeout":
      if (!call.outgoing) return { text: `You missed a call from ${caller}.`, tone: "bad" };
      return call.isGroupCall
        ? { text: `Nobody in ${call.groupName} answered in time.`, tone: "bad" }
        : { text: `${peer} did not answer: the call timed out.`, tone: "bad" };
    case "caller_disconnected":
      return { text: `${caller} went offline, so the call was cancelled.`, tone: "bad" };
    case "unavailable":
      return { text: `${peer} went offline before answering.`, tone: "bad" };
    case "disconnected":
      return { text: `${call.outgoing ? peer : caller} lost their connection: the call has ended.`, tone: "bad" };
    default:
      return { text: `The call has ended (${reason}).`, tone: "neutral" };
  }
}

/** The words for a refused action, by error code (docs/protocol.md, "Error codes"). */
function refused(reply, who, call) {
  const code = reply.error?.code;
  const text =
    {
      offline: `${who} is offline. Try again when they are online.`,
      busy: `${who} is busy in another call. Try again later.`,
      glare: `${who} is calling you at this very moment: answer their call instead.`,
      rate_limited: `Too many attempts in a short time (rate limited). Try again in ${Math.ceil((reply.retryAfterMs ?? 1000) / 1000)} s.`,
      not_found: call ? "This call is over." : `${who} cannot be found.`,
      invalid_state: "Too late: this call has changed in the meantime.",
      forbidden: reply.error?.message ?? "You are not allowed to do that.",
      not_connected: "Not connected to the server. Wait for the page to reconnect.",
      ack_timeout: "The server did not answer in time.",
      disconnected: "The connection dropped before the server answered.",
    }[code] ?? `Refused: ${reply.error?.message ?? code}.`;
  say(text, "bad");
  banner(text);
}

// ---- 6. Jitsi ---------------------------------------------------------------------------------
//
// When the server has a Jitsi domain, the acks of initiateVideoCall and
// acceptVideoCall carry jitsi: { domain, room, jwt } (jwt only when room
// tokens are on). The page loads https://<domain>/external_api.js (the
// page's CSP allows that domain and nothing else) and opens the room in it.
// Without a domain, or when the script cannot load, the call still works: the
// page says so and shows the room name.

let jitsiScript = null; // domain -> Promise, loaded once

function loadJitsi(domain) {
  if (jitsiScript?.domain === domain) return jitsiScript.promise;
  const promise = new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = `https://${domain}/external_api.js`;
    script.onload = () => (window.JitsiMeetExternalAPI ? resolve() : reject(new Error("no JitsiMeetExternalAPI")));
    script.onerror = () => reject(new Error("script did not load"));
    document.head.append(script);
  });
  jitsiScript = { domain, promise };
  return promise;
}

async function openMeeting(call) {
  if (call.meeting?.api) return;
  const room = call.jitsi?.room ?? call.roomName;
  if (!call.jitsi?.domain) {
    call.meeting = { text: `No Jitsi server is configured here, so no video opens. The meeting room is "${room}".` };
    return render();
  }
  const { domain, jwt } = call.jitsi;
  call.meeting = { text: `Opening the meeting "${room}" on ${domain}...` };
  render();
  try {
    await loadJitsi(domain);
    if (call.state !== "active") return;
    const parentNode = document.querySelector(`[data-call-id="${call.id}"] .meeting`);
    call.meeting = {
      text: `Meeting "${room}" on ${domain}.`,
      api: new window.JitsiMeetExternalAPI(domain, {
        roomName: room,
        jwt: jwt ?? undefined,
        parentNode,
        width: "100%",
        height: 420,
        userInfo: { displayName: me().displayName },
      }),
    };
  } catch {
    call.meeting = { text: `Could not load Jitsi from ${domain} (no network?). The call is still on; the meeting room is "${room}".` };
  }
  render();
}

async function restoreMeeting(call) {
  // After a reload the record has no Jitsi details; ask for a fresh room token.
  const reply = await ask("refreshJitsiToken", { callId: call.id });
  if (reply.ok && reply.jitsi) call.jitsi = reply.jitsi;
  openMeeting(call);
}

function closeMeeting(call) {
  call.meeting?.api?.dispose();
  call.meeting = null;
}

// ---- 7. Rendering -------------------------------------------------------------------------------

function setConnection(tone, text) {
  const chip = $("connection");
  chip.textContent = text;
  chip.className = `chip ${tone}`;
  renderDirectory(); // call buttons depend on the connection
}

function say(text, tone = "neutral") {
  const li = document.createElement("li");
  li.className = tone;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  li.append(time, " ", text);
  $("log").prepend(li);
  while ($("log").children.length > 50) $("log").lastChild.remove();
}

function note(call, text) {
  call.notes = [...call.notes.slice(-2), text];
  render();
}

let bannerTimer = null;
/** A refusal, shown above the calls until the next action (or 8 s). */
function banner(text) {
  let el = $("banner");
  if (!el) {
    el = document.createElement("p");
    el.id = "banner";
    el.setAttribute("role", "alert");
    $("calls").before(el);
  }
  el.textContent = text;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => el.remove(), 8000);
}

function button(label, onClick, kind = "") {
  const b = document.createElement("button");
  b.textContent = label;
  b.className = kind;
  b.addEventListener("click", () => {
    $("banner")?.remove();
    onClick();
  });
  return b;
}

function renderDirectory() {
  if (!state.session) return;
  const online = state.socket?.connected;
  // Who is in one of our live calls, and how: their row says so instead of offering a call.
  const inCall = new Map();
  for (const c of state.calls.values()) {
    if (c.state === "ended") continue;
    const how = c.state === "active" ? "in your call" : c.outgoing ? "ringing" : "calling you";
    if (c.receiverId) inCall.set(c.receiverId, how);
    inCall.set(c.callerId, how);
    for (const id of c.participants.keys()) inCall.set(id, how);
  }
  const people = $("contacts");
  people.replaceChildren();
  for (const c of state.contacts.values()) {
    const li = document.createElement("li");
    li.dataset.user = c.username;
    const dot = document.createElement("span");
    dot.className = `dot ${c.online ? "on" : "off"}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = c.displayName;
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = c.online ? "online" : "offline";
    li.append(dot, who, status);
    if (inCall.has(c.id)) {
      status.textContent += ` \u00b7 ${inCall.get(c.id)}`;
    } else {
      const call = button("Call", () => callPerson(c));
      call.disabled = !online;
      li.append(call);
    }
    people.append(li);
  }
  if (state.contacts.size === 0) people.innerHTML = '<li class="empty">Nobody shares a group with you yet.</li>';

  const groups = $("groups");
  groups.replaceChildren();
  for (const g of state.groups) {
    const others = g.members.filter((id) => id !== me().id);
    const onlineCount = others.filter((id) => state.contacts.get(id)?.online).length;
    const li = document.createElement("li");
    li.dataset.group = g.id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = g.name;
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = `${onlineCount} of ${others.length} online`;
    const call = button("Call group", () => callGroup(g));
    call.disabled = !online;
    li.append(who, status, call);
    groups.append(li);
  }
  if (state.groups.length === 0) groups.innerHTML = '<li class="empty">You are in no group.</li>';
}

const STATE_WORDS = {
  ringing: (c) => (c.outgoing ? "ringing" : "incoming"),
  active: () => "in call",
  ended: () => "ended",
};

function renderCall(call) {
  const card = $("call-template").content.firstElementChild.cloneNode(true);
  card.dataset.callId = call.id;
  card.dataset.state = call.state;
  card.classList.add(call.state, call.outgoing ? "outgoing" : "incoming");
  card.querySelector(".call-kind").textContent = call.isGroupCall ? "Group call" : "Call";
  card.querySelector(".call-state").textContent = STATE_WORDS[call.state](call);

  const title = card.querySelector(".call-title");
  const detail = card.querySelector(".call-detail");
  const actions = card.querySelector(".actions");
  if (call.state === "ringing" && call.outgoing) {
    title.textContent = `Calling ${call.peerName}...`;
    detail.textContent = call.isGroupCall
      ? "Everyone else in the group is being rung. Waiting for someone to answer."
      : `${call.peerName} is being rung on every device. Waiting for an answer.`;
    actions.append(button("Cancel call", () => hangUp(call), "danger"));
  } else if (call.state === "ringing" && call.alreadyActive) {
    title.textContent = `A call is going on in ${call.groupName}`;
    detail.textContent = `Started by ${call.callerName}.`;
    actions.append(button("Join", () => accept(call), "good"));
  } else if (call.state === "ringing") {
    title.textContent = call.isGroupCall
      ? `${call.callerName} is calling ${call.groupName}`
      : `${call.callerName} is calling you`;
    detail.textContent = "Answer to join the meeting.";
    actions.append(button("Accept", () => accept(call), "good"), button("Decline", () => decline(call), "danger"));
  } else if (call.state === "active") {
    title.textContent = call.isGroupCall ? `In the call in ${call.groupName}` : `In a call with ${call.peerName}`;
    const started = new Date(call.startedAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    detail.textContent = `Call placed by ${call.outgoing ? "you" : call.callerName} at ${started}.`;
    if (call.isGroupCall) {
      actions.append(button("Leave", () => hangUp(call), "danger"));
      if (call.outgoing) actions.append(button("End for everyone", () => hangUp(call, true), "danger"));
    } else {
      actions.append(button("Hang up", () => hangUp(call), "danger"));
    }
  } else {
    title.textContent = call.isGroupCall ? `Call in ${call.groupName}` : `Call with ${call.peerName}`;
    detail.textContent = call.outcome.text;
    detail.className = `call-detail outcome ${call.outcome.tone}`;
    actions.append(button("Dismiss", () => {
      state.calls.delete(call.id);
      render();
    }, "quiet"));
  }

  if (call.isGroupCall && call.state === "active") {
    const list = card.querySelector(".participants");
    list.hidden = false;
    const label = document.createElement("li");
    label.className = "label";
    label.textContent = "In the call:";
    list.append(label);
    for (const n of ["You", ...call.participants.values()]) {
      const li = document.createElement("li");
      li.textContent = n;
      list.append(li);
    }
  }
  if (call.state !== "ended" && call.notes.length) {
    const notes = document.createElement("p");
    notes.className = "notes";
    notes.textContent = call.notes.join(" ");
    detail.after(notes);
  }
  if (call.state === "active" && call.meeting) {
    const meeting = card.querySelector(".meeting");
    meeting.hidden = false;
    if (call.meeting.api) {
      // Keep the live Jitsi iframe: move the existing node into the new card.
      const old = document.querySelector(`[data-call-id="${call.id}"] .meeting`);
      if (old) meeting.replaceWith(old);
    } else {
      meeting.textContent = call.meeting.text;
    }
  }
  return card;
}

function render() {
  if (!state.session) return;
  const order = { ringing: 0, active: 1, ended: 2 };
  const calls = [...state.calls.values()].sort((a, b) => order[a.state] - order[b.state]);
  $("calls").replaceChildren(...calls.map(renderCall));
  $("no-calls").hidden = calls.length > 0;
  const ringing = calls.some((c) => c.state === "ringing" && !c.outgoing && !c.alreadyActive);
  document.title = ringing ? "Incoming call - callgate demo" : "callgate demo";
  renderDirectory();
}

// ---- Log in and out --------------------------------------------------------------------------------

function start(session) {
  state.session = session;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("whoami").hidden = false;
  $("me-name").textContent = `${session.user.displayName} (${session.user.username})`;
  setConnection("warn", "connecting");
  connectSocket();
  refreshDirectory();
  state.pollTimer = setInterval(refreshDirectory, POLL_MS);
}

function logOut(reason) {
  sessionStorage.removeItem(SESSION_KEY);
  state.socket?.disconnect();
  clearInterval(state.pollTimer);
  for (const call of state.calls.values()) closeMeeting(call);
  Object.assign(state, {
    session: null,
    socket: null,
    calls: new Map(),
    liveAfterConnect: new Set(),
    contacts: new Map(),
    groups: [],
  });
  $("app-view").hidden = true;
  $("whoami").hidden = true;
  $("login-view").hidden = false;
  $("log").replaceChildren();
  showLoginError(reason);
  if ($("account-buttons").children.length === 0) showDemoAccounts();
}

function showLoginError(text) {
  $("login-error").textContent = text ?? "";
  $("login-error").hidden = !text;
}

async function tryLogIn(username, password) {
  showLoginError(null);
  try {
    start(await logIn(username, password));
  } catch (err) {
    showLoginError(err.message);
  }
}

async function showDemoAccounts() {
  // Exists only in development with a seed marked "demo": true; else 404.
  const res = await fetch("accounts.json").catch(() => null);
  if (!res?.ok) {
    $("no-demo-accounts").hidden = false;
    return;
  }
  const accounts = await res.json();
  $("demo-accounts").hidden = false;
  for (const a of accounts) {
    const b = button(`${a.displayName}`, () => tryLogIn(a.username, a.password), "account");
    b.dataset.username = a.username;
    const sub = document.createElement("small");
    sub.textContent = a.username;
    b.append(sub);
    $("account-buttons").append(b);
  }
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  tryLogIn($("username").value.trim(), $("password").value);
});
$("logout").addEventListener("click", () => logOut());

const saved = loadSession();
if (saved) start(saved);
else showDemoAccounts();
