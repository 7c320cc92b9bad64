// Test harness: starts the real callgate binary on a free port with a fresh
// seed, logs in over HTTP and connects with the official socket.io-client.
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "..", "..");
export const BIN = process.env.CALLGATE_BIN ?? join(ROOT, "target", "debug", "callgate");
export const SECRET = "js-suite-secret-js-suite-secret-0123456789";
export const WAIT_MS = 5000;

/** The demo directory every JS test starts from (the seed frontend's ids). */
export const USERS = {
  alice: { id: "6860e2e85547033af89987ba", username: "alice", displayName: "Alice Adams", password: "alice-password" },
  bob: { id: "6860e2e85547033af89987bb", username: "bob", displayName: "Bob Brown", password: "bob-password" },
  carol: { id: "6860e2e85547033af89987bc", username: "carol", displayName: "Carol Clark", password: "carol-password" },
  mallory: { id: "6860e2e85547033af89987bd", username: "mallory", displayName: "Mallory M", password: "mallory-password" },
};
export const GROUP = { id: "507f1f77bcf86cd799439011", name: "Project Team" };

/**
 * Starts callgate with the seed above (or the `seed` file given) and extra
 * environment; resolves once it listens. Returns { url, stop, logs }.
 */
export async function startServer({ env = {}, args = [], seed, listen = "127.0.0.1:0", policy = join(here, "policy.toml") } = {}) {
  if (!seed) {
    const dir = mkdtempSync(join(tmpdir(), "callgate-js-"));
    seed = join(dir, "seed.json");
    writeFileSync(
      seed,
      JSON.stringify({
        users: Object.values(USERS),
        groups: [{ id: GROUP.id, name: GROUP.name, owner: USERS.alice.id, members: [USERS.alice.id, USERS.bob.id, USERS.carol.id] }],
      }),
    );
  }
  const child = spawn(BIN, ["serve", "--listen", listen, "--seed", seed, "--policy", policy, ...args], {
    cwd: ROOT,
    env: { ...process.env, CALLGATE_JWT_SECRET: SECRET, CALLGATE__LOG__FORMAT: "json", RUST_LOG: "debug,socketioxide=warn,engineioxide=warn,hyper=info,h2=info", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const logs = [];
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error("callgate did not start: " + logs.join("\n"))), 15000);
    let buffered = "";
    child.stderr.on("data", (chunk) => {
      buffered += chunk.toString();
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        logs.push(line);
        try {
          const entry = JSON.parse(line);
          if (entry.fields?.message === "callgate listening") {
            clearTimeout(timer);
            resolveUrl(`http://${entry.fields.addr}`);
          }
        } catch {
          // not JSON: a start-up error, kept in logs
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`callgate exited with ${code}: ${logs.join("\n")}`));
    });
  });
  const stop = () =>
    new Promise((done) => {
      if (child.exitCode !== null) return done();
      child.on("exit", () => done());
      child.kill("SIGTERM");
    }).then(() => assertNoSecrets(logs));
  return { url, stop, logs, child };
}

/**
 * Throws if the server's captured log lines hold anything secret: a JWT
 * shape, an argon2 hash, the signing secret or a password.
 */
export function assertNoSecrets(logs, passwords = []) {
  const text = logs.join("\n");
  const secrets = ["eyJ", "$argon2", SECRET, ...Object.values(USERS).map((u) => u.password), ...passwords];
  for (const secret of secrets) {
    if (text.includes(secret)) throw new Error(`server logs contain ${JSON.stringify(secret.slice(0, 8))}...`);
  }
  if (logs.length === 0) throw new Error("no server logs were captured");
}

/** POST /auth/login; resolves to the session body. */
export async function login(url, user) {
  const res = await fetch(`${url}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: user.username, password: user.password }),
  });
  if (res.status !== 200) throw new Error(`login ${user.username}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Connects with socket.io-client defaults (polling, then websocket upgrade). */
export function connect(url, token, opts = {}) {
  return io(url, { auth: { token }, reconnection: false, forceNew: true, ...opts });
}

/** Resolves on `connect`, rejects with the connect_error message. */
export function connected(socket) {
  return new Promise((resolveOk, reject) => {
    const timer = setTimeout(() => reject(new Error("no connect within wait")), WAIT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolveOk(socket);
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Logs `user` in and connects; resolves to a connected socket that records events. */
export async function online(url, user) {
  const session = await login(url, user);
  const socket = record(connect(url, session.token));
  await connected(socket);
  return socket;
}

/** Records every event a socket receives in socket.received. */
export function record(socket) {
  socket.received = [];
  socket.onAny((event, ...args) => socket.received.push({ event, payload: args[0] }));
  return socket;
}

/** The next `event` on `socket` (resolves with its payload). */
export function next(socket, event, ms = WAIT_MS) {
  return new Promise((resolveEvent, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    socket.once(event, (payload) => {
      clearTimeout(timer);
      resolveEvent(payload);
    });
  });
}

/** Emits with an ack and resolves with the ack's payload. */
export function ask(socket, event, payload) {
  return socket.timeout(WAIT_MS).emitWithAck(event, payload);
}

/** Waits `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An HS256 JWT signed with `secret`, built by hand so tests can forge any claim. */
export function signJwt(claims, { secret = SECRET, alg = "HS256" } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = b64({ alg, typ: "JWT" });
  const body = b64(claims);
  if (alg === "none") return `${head}.${body}.`;
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** Claims like callgate's own for `user`, valid `ttl` seconds. */
export function claims(user, ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  return { sub: user.id, name: user.displayName, iat: now, nbf: now, exp: now + ttl, iss: "callgate", aud: "callgate", jti: randomUUID() };
}

// ---------------------------------------------------------------------------
// Helpers shared by the seed-replay and attack suites.

/** How long to wait when asserting that something does NOT arrive. */
export const SETTLE_MS = 250;

/** A server-issued callId: a hyphenated lowercase UUID. */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Server → client events about calls: a bystander must never see one. */
export const CALL_EVENTS = [
  "incomingVideoCall",
  "videoCallAccepted",
  "videoCallRejected",
  "videoCallEnded",
  "videoCallRinging",
  "videoCallMissed",
  "groupCallParticipantJoined",
  "groupCallParticipantDeclined",
  "groupCallParticipantLeft",
  "activeVideoCalls",
];

/** Server → client events that report a refusal to the sending socket. */
export const FAILURE_EVENTS = ["error", "videoCallFailed"];

/** The call events among what a recording socket received (optionally since index `from`). */
export function callEvents(socket, from = 0) {
  return socket.received.slice(from).filter((e) => CALL_EVENTS.includes(e.event));
}

/** Event names a recording socket received since index `from`. */
export function eventNames(socket, from = 0) {
  return socket.received.slice(from).map((e) => e.event);
}

/**
 * Remembers how much each recording socket has received; the returned
 * function resolves, after SETTLE_MS, to what each received since, by index.
 */
export function mark(sockets) {
  const from = sockets.map((s) => s.received.length);
  return async () => {
    await sleep(SETTLE_MS);
    return sockets.map((s, i) => s.received.slice(from[i]));
  };
}

/** Resolves to the next `event` on each socket, in order (listeners attach at once). */
export function nextOnEach(sockets, event, ms = WAIT_MS) {
  return Promise.all(sockets.map((s) => next(s, event, ms)));
}

/** Which event a refused client event is reported with on the sending socket. */
export function failureEventFor(event) {
  return ["initiateVideoCall", "initiateGroupVideoCall", "acceptVideoCall", "rejectVideoCall", "endVideoCall"].includes(event)
    ? "videoCallFailed"
    : "error";
}
