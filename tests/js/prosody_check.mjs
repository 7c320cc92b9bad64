// An independent checker of the rules Prosody's mod_auth_token applies to a
// Jitsi room token (jitsi-meet resources/prosody-plugins/luajwtjitsi.lib.lua
// and token/util.lib.lua). It uses npm `jsonwebtoken`, not the Rust crate
// that signed the tokens, with no clock tolerance, plus the checks that
// library does not make: header typ exactly "JWT", kid with a key server,
// aud a plain string, room and sub present and matched the way Prosody
// matches them, context.user fields strings (moderator: true or "true").
import { createHmac } from "node:crypto";
import jwt from "jsonwebtoken";

/**
 * Verifies `token` as Prosody would when a client opens `room` (the MUC
 * room name, as the Jitsi client opens it). Throws with the reason, or
 * returns { header, payload }.
 *
 * opts: { alg: "HS256"|"RS256", key, issuers: [..], audiences: [..],
 *         subjects: [..] (accepted sub values: domain, tenant), room,
 *         now (seconds, default the clock) }
 */
export function checkProsody(token, { alg, key, issuers, audiences, subjects, room, now }) {
  const clockTimestamp = now ?? Math.floor(Date.now() / 1000);
  const { header, payload } = jwt.verify(token, key, {
    algorithms: [alg],
    clockTolerance: 0,
    clockTimestamp,
    complete: true,
  });
  if (header.typ !== "JWT") throw new Error("Invalid typ");
  if (header.alg !== alg) throw new Error("Invalid or incorrect alg");
  if (alg.startsWith("RS") && typeof header.kid !== "string") throw new Error("'kid' claim is missing");
  for (const claim of ["exp", "nbf", "iat"]) {
    if (payload[claim] !== undefined && (typeof payload[claim] !== "number" || !Number.isInteger(payload[claim]))) {
      throw new Error(`${claim} must be an integer number`);
    }
  }
  // Prosody: refused if now >= exp or now < nbf, no skew allowed.
  if (typeof payload.exp !== "number" || clockTimestamp >= payload.exp) throw new Error("Not acceptable by exp");
  if (typeof payload.nbf !== "number" || clockTimestamp < payload.nbf) throw new Error("Not acceptable by nbf");
  if (typeof payload.iss !== "string" || !issuers.includes(payload.iss)) throw new Error("Invalid issuer ('iss' claim)");
  if (typeof payload.aud !== "string" || !(audiences.includes("*") || audiences.includes(payload.aud))) {
    throw new Error("Invalid audience ('aud' claim)");
  }
  if (typeof payload.room !== "string") throw new Error("'room' claim is missing");
  if (payload.room !== "*" && room !== payload.room.toLowerCase()) throw new Error("room does not match the token");
  if (room !== room.toLowerCase()) throw new Error("Jitsi opens rooms lowercased");
  if (typeof payload.sub !== "string" || !(payload.sub === "*" || subjects.includes(payload.sub))) {
    throw new Error("sub does not match the domain or tenant");
  }
  const user = payload.context?.user;
  if (user !== undefined) {
    for (const [field, value] of Object.entries(user)) {
      if (field === "moderator") {
        if (![true, false, "true", "false"].includes(value)) throw new Error("moderator must be true or \"true\"");
      } else if (typeof value !== "string") {
        throw new Error(`context.user.${field} must be a string`);
      }
    }
  }
  assertNoNull(payload, "payload");
  return { header, payload };
}

function assertNoNull(value, path) {
  if (value === null) throw new Error(`${path} is null`);
  if (typeof value === "object") for (const [k, v] of Object.entries(value)) assertNoNull(v, `${path}.${k}`);
}

/**
 * Re-signs the token's payload, changed by `edit`, with HMAC-SHA256 under
 * `key` (built by hand, so any claim or header can be forged): what a
 * holder of the key, or of a public key misused as a secret, could make.
 */
export function resign(token, edit, { key, header = {} } = {}) {
  const { header: head, payload } = jwt.decode(token, { complete: true });
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const signing = `${b64({ ...head, alg: "HS256", ...header })}.${b64(edit({ ...payload }))}`;
  return `${signing}.${createHmac("sha256", key).update(signing).digest("base64url")}`;
}

/** The token with one character of its payload changed, signature kept. */
export function tamper(token) {
  const [h, p, s] = token.split(".");
  const body = JSON.parse(Buffer.from(p, "base64url").toString());
  body.room = "someone-elses-room";
  return `${h}.${Buffer.from(JSON.stringify(body)).toString("base64url")}.${s}`;
}
