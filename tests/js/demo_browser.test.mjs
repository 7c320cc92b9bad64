// The demo page in real Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): people in separate browser contexts log in on
// http://127.0.0.1:<free port>/demo/ and call each other through the real
// server. Each step is saved as a screenshot under target/demo-screenshots/.
//
// Without Chromium the test is reported as skipped, with the reason.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startServer, assertNoSecrets } from "./harness.mjs";

const CHROMIUM = process.env.CALLGATE_CHROMIUM ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
const SHOTS = join(ROOT, "target", "demo-screenshots");
const SEED = join(ROOT, "demo", "seed.json");
const WAIT_MS = 15000;
/** Short enough to watch a call go unanswered, long enough to answer the others. */
const RING_TIMEOUT_SECS = 6;

const demoSeed = JSON.parse(readFileSync(SEED, "utf8"));
const PASSWORDS = demoSeed.users.map((u) => u.password);

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} not found (apt-get install chromium; .ci/run installs it)`;

/** A port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Call initiations each person may make at once before `rate_limited` (one more a minute after). */
const INITIATE_BURST = 6;

/** The JS suite's policy (limits lifted) with a short ring timeout and a small initiate burst. */
function policyFile() {
  const text = readFileSync(join(ROOT, "tests", "js", "policy.toml"), "utf8")
    .replace(/^ring_timeout_secs = \d+$/m, `ring_timeout_secs = ${RING_TIMEOUT_SECS}`)
    .replace(/^call_initiate = .*$/m, `call_initiate = { per_minute = 1, burst = ${INITIATE_BURST} }`);
  assert.match(text, new RegExp(`ring_timeout_secs = ${RING_TIMEOUT_SECS}`));
  assert.match(text, new RegExp(`call_initiate = \\{ per_minute = 1, burst = ${INITIATE_BURST} \\}`));
  const path = join(mkdtempSync(join(tmpdir(), "callgate-demo-")), "policy.toml");
  writeFileSync(path, text);
  return path;
}

/**
 * Starts callgate (demo seed, `env` added) on a free port and Chromium, and
 * returns the helpers the scenarios below use. Screenshots are named
 * `<prefix>NN-<person>-<step>.png`.
 */
async function demoSession({ env = {}, prefix = "", secrets = [] } = {}) {
  const { chromium } = await import("playwright-core");
  // The page is served from the server's own origin, and that origin is
  // allowed the normal way: by listing it in server.allowed_origins.
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const server = await startServer({
    seed: SEED,
    listen: `127.0.0.1:${port}`,
    policy: policyFile(),
    env: { CALLGATE__SERVER__ALLOWED_ORIGINS: JSON.stringify([origin]), ...env },
  });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
  const problems = []; // console errors and CSP violations on any page
  const urls = []; // every URL a page requested, to check no token is in one
  let shot = 0;

  async function open(context, label) {
    const page = await context.newPage();
    page.label = label;
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`${label}: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`${label}: ${e.message}`));
    page.on("request", (r) => urls.push(r.url()));
    page.on("websocket", (ws) => urls.push(ws.url()));
    const res = await page.goto(`${origin}/demo/`);
    assert.equal(res.status(), 200);
    return page;
  }
  const person = async (label) => open(await browser.newContext({ viewport: { width: 1000, height: 720 } }), label);
  const snap = async (page, name) => {
    shot += 1;
    await page.screenshot({ path: join(SHOTS, `${prefix}${String(shot).padStart(2, "0")}-${page.label}-${name}.png`) });
  };
  /** Both windows side by side, half size: the README's picture (docs/demo.png is a copy). */
  const twoWindows = async (left, right) => {
    const [a, b] = await Promise.all([left.screenshot(), right.screenshot()]);
    const img = (png) => `<img src="data:image/png;base64,${png.toString("base64")}" width="500">`;
    const page = await browser.newPage({ viewport: { width: 1008, height: 360 } });
    await page.setContent(`<body style="margin:0;background:#9aa0a8;display:flex;gap:8px">${img(a)}${img(b)}</body>`);
    await page.screenshot({ path: join(SHOTS, `${prefix}00-two-windows.png`) });
    await page.close();
  };
  const see = (page, selector, text) => page.locator(selector, { hasText: text }).first().waitFor({ timeout: WAIT_MS });
  const card = (page, text) => page.locator(".call", { hasText: text }).first();
  const logIn = async (page, username) => {
    await page.locator(`button.account[data-username="${username}"]`).click();
    await see(page, "#connection", "connected");
  };
  const online = (page, username) => see(page, `#contacts li[data-user="${username}"] .status`, "online");
  const callPerson = (page, username) => page.locator(`#contacts li[data-user="${username}"] button`).click();
  const dismissAll = async (page) => {
    for (const b of await page.locator(".call.ended button", { hasText: "Dismiss" }).all()) await b.click();
  };
  /** Runs `scenario`; on failure saves what each page showed; always closes everything. */
  const run = async (scenario) => {
    try {
      await scenario();
    } catch (err) {
      for (const context of browser.contexts()) {
        for (const page of context.pages()) await snap(page, "FAILED").catch(() => {});
      }
      throw err;
    } finally {
      await browser.close();
      await server.stop();
    }
    assertNoSecrets(server.logs, [...PASSWORDS, ...secrets]);
  };
  return { port, origin, server, problems, urls, open, person, snap, twoWindows, see, card, logIn, online, callPerson, dismissAll, run };
}

rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });

test("two people call each other on the demo page in Chromium", { skip, timeout: 240_000 }, async () => {
  const { port, origin, problems, urls, open, person, snap, twoWindows, see, card, logIn, online, callPerson, dismissAll, run } =
    await demoSession();
  await run(async () => {
    const alice = await person("alice");
    const bob = await person("bob");
    const carol = await person("carol");

    // The login screen lists the demo users (this seed says "demo": true).
    await see(alice, "#account-buttons button", "Alice Adams");
    await snap(alice, "login");
    const headers = (await alice.request.get(`${origin}/demo/`)).headers();
    assert.match(headers["content-security-policy"], /script-src 'self';/);

    await logIn(alice, "alice");
    await logIn(bob, "bob");
    await logIn(carol, "carol");
    // Bob on a second "device": another tab of the same browser, its own login.
    const bobTab2 = await open(bob.context(), "bob-tab2");
    await logIn(bobTab2, "bob");
    await online(alice, "bob");
    await snap(alice, "logged-in");

    // 1. Alice calls Bob; both of Bob's tabs ring with her name.
    await callPerson(alice, "bob");
    await see(alice, ".call.ringing.outgoing", "Calling Bob Brown");
    await see(bob, ".call.ringing.incoming", "Alice Adams is calling you");
    await see(bobTab2, ".call.ringing.incoming", "Alice Adams is calling you");
    await snap(alice, "calling-bob");
    await snap(bob, "incoming-from-alice");
    await twoWindows(alice, bob);

    // Bob answers in his first tab: both show the call; his other tab stops ringing.
    await card(bob, "Alice Adams is calling you").getByRole("button", { name: "Accept" }).click();
    await see(bob, ".call.active", "In a call with Alice Adams");
    await see(alice, ".call.active", "In a call with Bob Brown");
    await see(bobTab2, ".call.ended", "You answered this call on another device");
    // No Jitsi domain on this server: the page says so and shows the room.
    await see(alice, ".call.active .meeting", "No Jitsi server is configured here");
    await snap(alice, "in-call-with-bob");
    await snap(bob, "in-call-with-alice");
    await snap(bobTab2, "answered-elsewhere");

    // 2. Carol calls Bob while he is in the call: busy.
    await online(carol, "bob");
    await callPerson(carol, "bob");
    await see(carol, "#banner", "Bob Brown is busy in another call");
    await snap(carol, "bob-is-busy");

    // 3. Bob reloads in the middle of the call: it comes back (activeVideoCalls).
    await bob.reload();
    await see(bob, ".call.active", "In a call with Alice Adams");
    await see(bob, "#log li", "Your call with Alice Adams is back after the reload");
    await snap(bob, "after-reload-still-in-call");

    // 4. Alice hangs up: both show the call ended.
    await card(alice, "In a call with Bob Brown").getByRole("button", { name: "Hang up" }).click();
    await see(alice, ".call.ended", "You hung up");
    await see(bob, ".call.ended", "Alice Adams hung up");
    await snap(alice, "hung-up");
    await snap(bob, "alice-hung-up");

    // 5. Alice calls again and Bob declines.
    for (const p of [alice, bob, bobTab2]) await dismissAll(p);
    await callPerson(alice, "bob");
    await see(bob, ".call.ringing.incoming", "Alice Adams is calling you");
    await card(bob, "Alice Adams is calling you").getByRole("button", { name: "Decline" }).click();
    await see(alice, ".call.ended", "Bob Brown declined the call");
    await see(bob, ".call.ended", "You declined the call from Alice Adams");
    await see(bobTab2, ".call.ended", "You declined this call on another device");
    await snap(alice, "bob-declined");
    await snap(bob, "declined");

    // 6. Nobody answers Carol's call to Alice: missed after the ring timeout.
    for (const p of [alice, bob, bobTab2]) await dismissAll(p);
    await online(carol, "alice");
    await callPerson(carol, "alice");
    await see(alice, ".call.ringing.incoming", "Carol Clark is calling you");
    await see(carol, ".call.ended", "Alice Adams did not answer");
    await see(alice, ".call.ended", "You missed a call from Carol Clark");
    await snap(carol, "alice-did-not-answer");
    await snap(alice, "missed-call");

    // 7. A group call: Alice calls Project Team, Bob joins, Carol declines,
    //    Alice ends it for everyone.
    for (const p of [alice, bob, bobTab2, carol]) await dismissAll(p);
    await alice.locator("#groups li", { hasText: "Project Team" }).getByRole("button", { name: "Call group" }).click();
    await see(bob, ".call.ringing.incoming", "Alice Adams is calling Project Team");
    await see(carol, ".call.ringing.incoming", "Alice Adams is calling Project Team");
    await snap(carol, "group-call-ringing");
    await card(bob, "Alice Adams is calling Project Team").getByRole("button", { name: "Accept" }).click();
    await card(carol, "Alice Adams is calling Project Team").getByRole("button", { name: "Decline" }).click();
    await see(alice, ".call.active .participants", "Bob Brown");
    await see(alice, ".call.active .notes", "Carol Clark declined");
    await snap(alice, "group-call-active");
    await card(alice, "In the call in Project Team").getByRole("button", { name: "End for everyone" }).click();
    await see(alice, ".call.ended", "You ended the call in Project Team for everyone");
    await see(bob, ".call.ended", "The call in Project Team has ended");
    await snap(bob, "group-call-ended");

    // 8. Dave is offline.
    await dismissAll(alice);
    await alice.locator(`#contacts li[data-user="dave"] .status`, { hasText: "offline" }).waitFor({ timeout: WAIT_MS });
    await callPerson(alice, "dave");
    await see(alice, "#banner", "Dave Davis is offline");
    await snap(alice, "dave-offline");

    // 9. Alice keeps pressing Call on Dave: once her burst is spent she is told to wait.
    let limited = false;
    for (let i = 0; i < INITIATE_BURST && !limited; i++) {
      const before = await alice.locator("#log li").count();
      await callPerson(alice, "dave");
      await alice.waitForFunction((n) => document.querySelectorAll("#log li").length > n, before);
      limited = (await alice.locator("#banner").textContent()).includes("rate limited");
    }
    assert.ok(limited, "rate_limited within the burst");
    await see(alice, "#banner", "Too many attempts in a short time (rate limited). Try again in");
    await snap(alice, "rate-limited");

    assert.deepEqual(problems, [], "no console errors and no CSP violations");
    const withToken = urls.filter((u) => u.includes("eyJ") || /token=/i.test(u));
    assert.deepEqual(withToken, [], "no token in any URL");
    assert.ok(urls.some((u) => u.startsWith(`ws://127.0.0.1:${port}/socket.io/`)), "the page used the websocket");
  });
});

test("with a Jitsi domain the answered call opens the meeting, or says why it cannot", { skip, timeout: 120_000 }, async (t) => {
  // Nothing listens on this port: loading external_api.js fails at once, as
  // it does with no network. The call itself must work the same.
  const closedPort = await freePort();
  const domain = `127.0.0.1:${closedPort}`;
  const appSecret = "demo-test-jitsi-secret-0123456789abcdef";
  let session;
  try {
    session = await demoSession({
      prefix: "jitsi-",
      secrets: [appSecret],
      env: {
        CALLGATE__JITSI__DOMAIN: domain,
        CALLGATE__JITSI__TOKEN: "hs256",
        CALLGATE__JITSI__APP_ID: "callgate-demo-test",
        CALLGATE__JITSI__APP_SECRET: appSecret,
        CALLGATE__JITSI__SUBJECT: "meet.jitsi",
      },
    });
  } catch (err) {
    if (/jitsi/.test(err.message) && /unknown/.test(err.message)) {
      return t.skip("this build has no [jitsi] configuration");
    }
    throw err;
  }
  const { origin, problems, urls, person, snap, see, card, logIn, online, callPerson, run } = session;
  await run(async () => {
    const csp = (await fetch(`${origin}/demo/`)).headers.get("content-security-policy");
    assert.match(csp, new RegExp(`script-src 'self' https://${domain};`));
    assert.match(csp, new RegExp(`frame-src https://${domain};`));

    const alice = await person("alice");
    const bob = await person("bob");
    const frames = []; // what the server sent alice's page
    alice.on("websocket", (ws) => ws.on("framereceived", (f) => frames.push(String(f.payload))));
    await logIn(alice, "alice");
    await logIn(bob, "bob");
    await online(alice, "bob");

    await callPerson(alice, "bob");
    await card(bob, "Alice Adams is calling you").getByRole("button", { name: "Accept" }).click();
    const cannotLoad = `Could not load Jitsi from ${domain}`;
    await see(alice, ".call.active .meeting", cannotLoad);
    await see(bob, ".call.active .meeting", cannotLoad);
    await see(bob, ".call.active .meeting", "the meeting room is \"call-");
    await snap(bob, "jitsi-unreachable");
    // The caller's ack carried her own room token (in memory only, never in a URL).
    assert.ok(frames.some((f) => /"jitsi":\{[^}]*"jwt":"eyJ/.test(f)), "the initiate ack carries jitsi.jwt");

    // A reload asks refreshJitsiToken and opens the meeting again.
    await bob.reload();
    await see(bob, ".call.active .meeting", cannotLoad);

    await card(alice, "In a call with Bob Brown").getByRole("button", { name: "Hang up" }).click();
    await see(bob, ".call.ended", "Alice Adams hung up");

    // The only errors are the script that could not load; no CSP violation.
    const unexpected = problems.filter((p) => !/Failed to load resource: net::ERR_CONNECTION_REFUSED/.test(p));
    assert.deepEqual(unexpected, [], "no console error but the unreachable Jitsi script");
    assert.ok(urls.some((u) => u === `https://${domain}/external_api.js`), "the page tried the Jitsi script");
    assert.deepEqual(urls.filter((u) => u.includes("eyJ")), [], "no token in any URL");
  });
});
