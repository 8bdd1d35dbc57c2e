// End-to-end test of the linking page in Debian's headless Chromium, started by tests/browser.rs
// (which runs the server, the agents, a foreign site and the devices' keypads on 127.0.0.1 and
// passes their addresses in LANLINK_* variables). Prints progress lines, then one JSON line: the
// report that tests/browser.rs checks. Exits non-zero on any failed expectation here.
//
// Cases: a wrong token (the error in words); a foreign origin cannot obtain the secret (fetch
// refused by CORS; its popup refused by the agent, or its message dropped by the browser); the page
// lists the devices and a click links one (direct fetch, from its second endpoint: the first, a
// silent port, is given up after the per-endpoint timeout); the popup path links another while a
// foreign window floods the page with forged messages (ignored by the listener); the manual code;
// the listener's checks one by one; and no secret in the console, in storage, or in a URL.

import { chromium } from "playwright-core";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

const env = process.env;
const need = (name) => {
  const value = env[name];
  if (!value) throw new Error(`missing ${name}`);
  return value;
};
const SERVER = need("LANLINK_SERVER");
const FOREIGN = need("LANLINK_FOREIGN");
const CONTROL = need("LANLINK_CONTROL");
const TOKEN = need("LANLINK_TOKEN");
const PREFIX = need("LANLINK_PREFIX");
const SHOTS = need("LANLINK_SCREENSHOTS");
const USER_DATA = need("LANLINK_USER_DATA");
const device = (name) => {
  const [ip, port] = need(`LANLINK_${name}_ADDR`).split(/:(?=\d+$)/);
  return { instance_id: need(`LANLINK_${name}_ID`), private_ip: ip, port: Number(port) };
};
const AUTO = device("AUTO");
const POPUP = device("POPUP");
const MANUAL = device("MANUAL");
const LNA_DENIED = device("LNADENIED");
const LNA_GRANTED = device("LNAGRANTED");
const BLOCKED = device("BLOCKED");
const CONFIRM = device("CONFIRM");
const HEX64 = /[0-9a-fA-F]{64}/;

mkdirSync(SHOTS, { recursive: true });
const report = { auto: {}, popup: {}, manual: {}, foreign: {}, listener: {}, hygiene: {}, lnaDenied: {}, lnaGranted: {}, blocked: {}, confirm: {} };
const log = (...args) => console.log("e2e |", ...args);
function expect(condition, what) {
  if (!condition) throw new Error(`expectation failed: ${what}`);
  log("ok:", what);
}
async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log("screenshot", path);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function deviceStatus() {
  return (await fetch(`${CONTROL}/status`)).json();
}
async function waitDevice(name, wanted, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const status = await deviceStatus();
    if (status[name] === wanted) return;
    if (Date.now() > deadline) throw new Error(`device ${name} is ${status[name]}, not ${wanted}`);
    await sleep(200);
  }
}

/** Chromium with the flags these machines need, a fresh profile in `dir`, and `extra` flags. */
const launch = (dir, extra = []) => chromium.launchPersistentContext(dir, {
  executablePath: need("LANLINK_CHROMIUM"),
  headless: true,
  // Keep Chromium's popup blocker on, as for users (Playwright turns it off by default).
  ignoreDefaultArgs: ["--disable-popup-blocking"],
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    ...extra,
  ],
  viewport: { width: 900, height: 1000 },
});
const context = await launch(USER_DATA);

// Everything every page (popups included) logs, and every URL requested: no secret may show.
const consoleLines = [];
const requestUrls = [];
const watch = (page) => {
  page.on("console", (m) => consoleLines.push({ url: page.url(), type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => consoleLines.push({ url: page.url(), type: "pageerror", text: String(e) }));
};
context.on("page", watch);
context.on("request", (r) => requestUrls.push(r.url()));

try {
  log("browser", context.browser()?.version() ?? "(persistent context)");

  // ── 0. a wrong token: the error in words ─────────────────────────────────────────────
  const page = await context.newPage();
  await page.goto(`${SERVER}/link`);
  await page.fill("#token", "not-the-right-token");
  await page.click("#find");
  await page.waitForSelector("body[data-state=error]");
  const wrong = await page.textContent("#error");
  expect(/sign-in was not accepted/.test(wrong), "a wrong token reads as a sign-in problem");
  report.support = await page.textContent("#support");
  await shot(page, "00-wrong-token");

  // ── 1. a foreign origin cannot obtain the secret ────────────────────────────────────
  const foreign = await context.newPage();
  await foreign.goto(`${FOREIGN}/link`);
  const secretUrl = `http://${AUTO.private_ip}:${AUTO.port}${PREFIX}/secret?instance_id=${AUTO.instance_id}`;
  report.foreign.rawFetch = await foreign.evaluate(async (url) => {
    try {
      await fetch(url, { targetAddressSpace: "loopback" });
      return "read";
    } catch (e) {
      return "blocked";
    }
  }, secretUrl);
  expect(report.foreign.rawFetch === "blocked", "a foreign page's raw fetch of the secret is refused (CORS)");
  report.foreign.fetch = await foreign.evaluate(async ({ agent, server }) => {
    const m = await import("/lanlink.js");
    try {
      await new m.Linker({ server }).link(agent, { path: "fetch-lna" });
      return "linked";
    } catch (e) {
      return e.attempts && e.attempts[0] ? e.attempts[0].outcome : e.code;
    }
  }, { agent: AUTO, server: SERVER });
  expect(report.foreign.fetch === "blocked", "the module's fetch from a foreign page is refused");

  // The popup, asked for by the foreign page: first naming its own origin (the agent refuses the
  // page), then naming the real page's origin (the agent's page posts there, and the browser drops
  // the message because the opener is not that origin). A raw listener counts any message at all.
  await foreign.evaluate(({ agent, server }) => {
    window.__got = 0;
    window.addEventListener("message", () => { window.__got += 1; });
    const attack = (id, pageOrigin) => {
      const button = document.createElement("button");
      button.id = id;
      button.textContent = id;
      button.onclick = async () => {
        const m = await import("/lanlink.js");
        const linker = new m.Linker({ server, pageOrigin, popupTimeoutMs: 4000 });
        try {
          await linker.link(agent, { path: "popup" });
          window[`__${id}`] = "linked";
        } catch (e) {
          window[`__${id}`] = e.code;
        }
      };
      document.body.prepend(button);
    };
    attack("own", location.origin);
    attack("spoof", server);
  }, { agent: AUTO, server: SERVER });

  const ownPopupPromise = foreign.waitForEvent("popup");
  await foreign.click("#own");
  const ownPopup = await ownPopupPromise;
  await ownPopup.waitForLoadState();
  await ownPopup.waitForFunction(() => /said no/.test(document.body.innerText));
  const ownText = await ownPopup.textContent("#status");
  expect(/does not accept linking from this website/.test(ownText), "the agent's popup page refuses a foreign origin, in words");
  await shot(ownPopup, "01-foreign-popup-refused");
  await foreign.waitForFunction(() => window.__own !== undefined, null, { timeout: 10000 });
  report.foreign.popupOwnOrigin = await foreign.evaluate(() => window.__own);

  const spoofPopupPromise = foreign.waitForEvent("popup");
  await foreign.click("#spoof");
  const spoofPopup = await spoofPopupPromise;
  // The agent's page greets the origin it was told; the browser drops that for a foreign opener,
  // so the page waits and never fetches the secret.
  await spoofPopup.waitForFunction(() => /Waiting for the linking page/.test(document.body.innerText));
  report.foreign.spoofedPopupText = await spoofPopup.textContent("#status");
  await shot(spoofPopup, "01b-foreign-popup-spoofed-origin-waiting");
  await foreign.waitForFunction(() => window.__spoof !== undefined, null, { timeout: 10000 });
  report.foreign.popupSpoofedOrigin = await foreign.evaluate(() => window.__spoof);
  report.foreign.messagesReceived = await foreign.evaluate(() => window.__got);
  // Chromium reports the dropped message in the foreign page's console.
  report.foreign.browserSaidTargetMismatch = consoleLines.some((c) => /does not match the recipient window's origin/.test(c.text));
  expect(report.foreign.messagesReceived === 0, "no message at all reached the foreign page");
  expect(report.foreign.popupOwnOrigin === "popup_timeout" && report.foreign.popupSpoofedOrigin !== "linked",
    "the foreign page's popups gave it nothing");
  await shot(foreign, "02-foreign-page-after-attacks");
  await foreign.close();

  // ── 2. the page lists the devices; a click links one ────────────────────────────────
  await page.fill("#token", TOKEN);
  await page.click("#find");
  await page.waitForSelector("body[data-state=listed]");
  const listed = await page.$$eval("#devices li[data-instance-id]", (lis) => lis.map((li) => li.dataset.instanceId));
  for (const d of [AUTO, POPUP, MANUAL]) {
    expect(listed.includes(d.instance_id), `device ${d.instance_id} is listed`);
  }
  const autoText = await page.textContent(`li[data-instance-id="${AUTO.instance_id}"]`);
  expect(/printer-auto/.test(autoText) && /Voron 2\.4/.test(autoText), "the device shows its name and model");
  await shot(page, "03-devices-listed");
  // Revision 1.6: when the device linked, as its control says (looked at every 25 ms), to tell
  // how soon after it the page shows it.
  let deviceLinkedAt = 0;
  const watchDevice = (async () => {
    const until = Date.now() + 30000;
    while (!deviceLinkedAt && Date.now() < until) {
      if ((await deviceStatus()).auto === "linked") deviceLinkedAt = Date.now();
      else await sleep(25);
    }
  })();
  // When the page itself shows it (its clock is this machine's): not when Playwright notices.
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    new MutationObserver(() => {
      if (document.body.dataset.state === "linked" && !w.__linkedAt) w.__linkedAt = Date.now();
    }).observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
  });
  await page.click(`li[data-instance-id="${AUTO.instance_id}"] button`);
  await page.waitForSelector("body[data-state=linked]", { timeout: 30000 });
  const pageLinkedAt = await page.evaluate(() => /** @type {any} */ (window).__linkedAt);
  await watchDevice;
  // The page asked the link's state with a hold, and so showed "linked" within a round trip of
  // the device's redemption (about 100 ms here). Polling once a second, it would show it about
  // a second after the delivery, as the device redeems within milliseconds of it.
  report.auto.heldStatus = requestUrls.some((u) => u.includes(`${PREFIX}/link/${AUTO.instance_id}?hold_ms=20000`));
  expect(report.auto.heldStatus, "the page asks the link's state with ?hold_ms=20000 (revision 1.6)");
  report.auto.pageLagMs = deviceLinkedAt ? Math.max(0, pageLinkedAt - deviceLinkedAt) : null;
  expect(report.auto.pageLagMs !== null && report.auto.pageLagMs < 750,
    `the page shows linked within 750 ms of the device (${report.auto.pageLagMs} ms)`);
  report.auto.path = await page.evaluate(() => document.body.dataset.path);
  report.auto.endpoint = await page.evaluate(() => document.body.dataset.endpoint);
  report.auto.status = await page.textContent("#status");
  expect(/is linked to your account/.test(report.auto.status), "the page says the device is linked");
  await shot(page, "04-linked-direct");
  await waitDevice("auto", "linked");
  report.auto.device = "linked";

  // ── 3. the popup path, under a flood of forged messages from another origin ─────────
  const page2 = await context.newPage();
  await page2.goto(`${SERVER}/link?path=popup`);
  await page2.fill("#token", TOKEN);
  await page2.click("#find");
  await page2.waitForSelector(`li[data-instance-id="${POPUP.instance_id}"]`);
  await page2.evaluate((foreignUrl) => {
    const button = document.createElement("button");
    button.id = "open-forger";
    button.textContent = "open forger";
    // A document from the foreign origin without COOP (the linking page's own COOP would cut
    // the opener of a window from another origin, which is how the real page is protected).
    button.onclick = () => window.open(`${foreignUrl}/lanlink.d.ts`, "forger", "popup,width=300,height=300");
    document.body.prepend(button);
  }, FOREIGN);
  const forgerPromise = page2.waitForEvent("popup");
  await page2.click("#open-forger");
  const forger = await forgerPromise;
  await forger.waitForLoadState();
  await forger.evaluate((id) => {
    // Same shape as the agent's message, with a made-up secret, to the opener, to "*".
    setInterval(() => {
      if (window.opener) {
        window.opener.postMessage({ type: "lanlink-secret", version: 1, instance_id: id, local_secret: "ab".repeat(32) }, "*");
      }
    }, 20);
  }, POPUP.instance_id);
  await sleep(200);
  // The device's popup opens and answers at once; the module closes it on the answer.
  const devicePopupPromise = page2.waitForEvent("popup");
  await page2.click(`li[data-instance-id="${POPUP.instance_id}"] button`);
  report.popup.popupUrl = (await devicePopupPromise).url().replace(/instance_id=[^&]*/, "instance_id=…");
  await page2.waitForSelector("body[data-state=linked]", { timeout: 30000 });
  report.popup.path = await page2.evaluate(() => document.body.dataset.path);
  report.popup.ignoredMessages = Number(await page2.evaluate(() => document.body.dataset.ignored));
  expect(report.popup.path === "popup", "linked through the device's popup");
  expect(report.popup.ignoredMessages > 0, "forged messages reached the listener and were ignored");
  await shot(page2, "06-linked-via-popup");
  await forger.close();
  await waitDevice("popup", "linked");
  report.popup.device = "linked";

  // ── 3b. the popup blocked (no user gesture), then opened by a second, real click ─────
  // `element.click()` from script carries no user activation, so Chromium's popup blocker
  // refuses window.open: the page says so in words and offers "Open the device's window".
  await page2.waitForSelector(`li[data-instance-id="${BLOCKED.instance_id}"] button`);
  // Playwright's own evaluations count as user gestures: wait until their activation has
  // expired (about 5 s), then click through CDP without a gesture.
  await sleep(5500);
  const cdp = await context.newCDPSession(page2);
  const clicked = await cdp.send("Runtime.evaluate", {
    expression: `document.querySelector('li[data-instance-id="${BLOCKED.instance_id}"] button').click(); document.body.dataset.state`,
    userGesture: false,
  });
  expect(clicked.result && clicked.result.value === "linking", "the click without a gesture starts linking");
  await page2.waitForSelector("body[data-state=error]", { timeout: 10000 });
  report.blocked.error = await page2.evaluate(() => document.body.dataset.error);
  report.blocked.words = await page2.textContent("#error");
  expect(report.blocked.error === "popup_blocked" && /blocked the device's window/.test(report.blocked.words),
    "a blocked popup is explained in words");
  expect(await page2.isVisible("#retry-popup"), "the page offers to open the device's window");
  await shot(page2, "07-popup-blocked");
  const retryPopup = page2.waitForEvent("popup");
  await page2.click("#retry-popup");
  await retryPopup;
  await page2.waitForSelector("body[data-state=linked]", { timeout: 30000 });
  report.blocked.path = await page2.evaluate(() => document.body.dataset.path);
  expect(report.blocked.path === "popup", "the second click links through the popup");
  await waitDevice("blocked", "linked");
  report.blocked.device = "linked";

  // ── 4. the manual code ──────────────────────────────────────────────────────────────
  await page.click("#get-code");
  await page.waitForSelector("body[data-state=code]");
  const code = await page.evaluate(() => document.getElementById("code").dataset.code);
  expect(/^\d{6}$/.test(code), "a 6-digit code is shown");
  await shot(page, "07b-manual-code");
  const typed = await fetch(`${CONTROL}/code/manual`, { method: "POST", body: code });
  expect(typed.status === 204, "the device takes the code");
  await waitDevice("manual", "linked");
  report.manual.device = "linked";

  // ── 4a. confirmation at both ends (revision 1.4): the page shows the device's code ───
  const page3 = await context.newPage();
  await page3.goto(`${SERVER}/link`);
  await page3.fill("#token", TOKEN);
  await page3.click("#find");
  await page3.waitForSelector(`li[data-instance-id="${CONFIRM.instance_id}"] button`);
  await page3.click(`li[data-instance-id="${CONFIRM.instance_id}"] button`);
  await page3.waitForSelector("#short-code-box:not([hidden])", { timeout: 20000 });
  report.confirm.page = (await page3.textContent("#short-code")).trim();
  expect(/^\d{3} \d{3}$/.test(report.confirm.page), "the page shows a short code");
  report.confirm.status = await page3.textContent("#status");
  expect(report.confirm.status.includes(report.confirm.page), "the page says which code to look for");
  await waitDevice("confirm", "confirming");
  report.confirm.beforeApproval = (await deviceStatus()).confirm;
  const shown = await fetch(`${CONTROL}/shown/confirm`);
  report.confirm.device = (await shown.text()).trim();
  expect(report.confirm.device === report.confirm.page, "the device shows the page's code");
  await shot(page3, "07c-confirm-short-code");
  const approved = await fetch(`${CONTROL}/approve/confirm`, { method: "POST" });
  expect(approved.status === 204, "the owner approves at the device");
  await page3.waitForSelector("body[data-state=linked]", { timeout: 30000 });
  await waitDevice("confirm", "linked");
  await page3.close();

  // ── 4b. a public page under Local Network Access ───────────────────────────────────
  // A second browser that counts the server's address as public (as a cloud page is), so a fetch
  // to the agents (loopback) is a local-network request: Chromium asks for the permission, which
  // a headless browser denies unless granted. Denied, the page falls back to the popup (a
  // top-level navigation, outside LNA); granted, the direct fetch works.
  const serverPort = new URL(SERVER).port;
  const lnaDir = `${USER_DATA}-lna`;
  const lnaContext = await launch(lnaDir, [`--ip-address-space-overrides=127.0.0.1:${serverPort}=public`]);
  lnaContext.on("page", watch);
  lnaContext.on("request", (r) => requestUrls.push(r.url()));
  try {
    const lnaPage = await lnaContext.newPage();
    await lnaPage.goto(`${SERVER}/link`);
    report.lnaDenied.permission = await lnaPage.evaluate(async () => {
      try {
        return (await navigator.permissions.query({ name: "local-network-access" })).state;
      } catch (e) {
        return "unknown";
      }
    });
    await lnaPage.fill("#token", TOKEN);
    await lnaPage.click("#find");
    await lnaPage.waitForSelector(`li[data-instance-id="${LNA_DENIED.instance_id}"]`);
    await lnaPage.click(`li[data-instance-id="${LNA_DENIED.instance_id}"] button`);
    await lnaPage.waitForSelector("body[data-state=linked]", { timeout: 30000 });
    report.lnaDenied.path = await lnaPage.evaluate(() => document.body.dataset.path);
    report.lnaDenied.attempts = await lnaPage.evaluate(() => document.body.dataset.attempts);
    report.lnaDenied.status = await lnaPage.textContent("#status");
    expect(report.lnaDenied.path === "popup" && /^fetch-lna:blocked,popup:ok$/.test(report.lnaDenied.attempts),
      "LNA permission denied: the direct fetch is blocked and the popup fallback links");
    await shot(lnaPage, "08-lna-denied-popup-fallback");
    await waitDevice("lnadenied", "linked");
    report.lnaDenied.device = "linked";

    await lnaContext.grantPermissions(["local-network-access"], { origin: SERVER });
    report.lnaGranted.permission = await lnaPage.evaluate(async () =>
      (await navigator.permissions.query({ name: "local-network-access" })).state);
    await lnaPage.click("#find");
    await lnaPage.waitForSelector(`li[data-instance-id="${LNA_GRANTED.instance_id}"] button`);
    await lnaPage.click(`li[data-instance-id="${LNA_GRANTED.instance_id}"] button`);
    await lnaPage.waitForFunction((id) => document.body.dataset.state === "linked" &&
      document.querySelector(`li[data-instance-id="${id}"] .linked-badge`), LNA_GRANTED.instance_id, { timeout: 30000 });
    report.lnaGranted.path = await lnaPage.evaluate(() => document.body.dataset.path);
    report.lnaGranted.attempts = await lnaPage.evaluate(() => document.body.dataset.attempts);
    expect(report.lnaGranted.path === "fetch-lna", "LNA permission granted: the direct fetch links");
    await shot(lnaPage, "09-lna-granted-direct");
    await waitDevice("lnagranted", "linked");
    report.lnaGranted.device = "linked";
  } finally {
    await lnaContext.close();
    rmSync(lnaDir, { recursive: true, force: true });
  }

  // ── 5. the listener's checks, one by one ────────────────────────────────────────────
  report.listener = await page.evaluate(async (agent) => {
    const m = await import("/lanlink.js");
    const origin = m.agentOrigin(agent);
    const source = {};
    const expected = { origin, instanceId: agent.instance_id, source };
    const secret = "cd".repeat(32);
    const good = { type: "lanlink-secret", version: 1, instance_id: agent.instance_id, local_secret: secret };
    const verdict = (event) => {
      const v = m.acceptPopupMessage(event, expected);
      return v ? v.kind : "ignored";
    };
    return {
      good: verdict({ origin, source, data: good }),
      otherOrigin: verdict({ origin: "http://127.0.0.1:1", source, data: good }),
      originPrefix: verdict({ origin: origin + "0", source, data: good }),
      otherSource: verdict({ origin, source: {}, data: good }),
      otherInstance: verdict({ origin, source, data: { ...good, instance_id: "00000000-0000-4000-8000-000000000000" } }),
      shortSecret: verdict({ origin, source, data: { ...good, local_secret: "cd" } }),
      otherVersion: verdict({ origin, source, data: { ...good, version: 2 } }),
      string: verdict({ origin, source, data: JSON.stringify(good) }),
      refused: verdict({ origin, source, data: { type: "lanlink-refused", version: 1, instance_id: agent.instance_id, error: "not_local" } }),
    };
  }, AUTO);
  const l = report.listener;
  expect(l.good === "secret" && l.refused === "refused", "the listener accepts the agent's answer");
  for (const k of ["otherOrigin", "originPrefix", "otherSource", "otherInstance", "shortSecret", "otherVersion", "string"]) {
    expect(l[k] === "ignored", `the listener ignores a message with ${k}`);
  }
  report.listener.ok = true;

  // ── 6. hygiene: no secret in the console, storage or any URL ───────────────────────
  report.hygiene.consoleLines = consoleLines.length;
  report.hygiene.consoleSecrets = consoleLines.filter((c) => HEX64.test(c.text)).length;
  report.hygiene.urlSecrets = requestUrls.filter((u) => HEX64.test(u)).length;
  report.hygiene.storage = await page.evaluate(() => localStorage.length + sessionStorage.length);
  report.hygiene.requests = requestUrls.length;
  expect(report.hygiene.consoleSecrets === 0, "no secret in any console");
  expect(report.hygiene.urlSecrets === 0, "no secret in any requested URL");
  expect(report.hygiene.storage === 0, "nothing in localStorage or sessionStorage");
  for (const c of consoleLines) log("console", c.type, c.url, c.text.slice(0, 200));
} catch (err) {
  console.error("e2e failed:", err);
  for (const c of consoleLines) console.error("console", c.type, c.url, c.text.slice(0, 300));
  for (const p of context.pages()) {
    try {
      await shot(p, `failure-${context.pages().indexOf(p)}`);
    } catch (_) {
      /* the page may be gone */
    }
  }
  await context.close();
  console.log(JSON.stringify(report));
  process.exit(1);
}
await context.close();
console.log(JSON.stringify(report));
