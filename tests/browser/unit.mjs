// Unit tests of web/lanlink.js's pure parts under Node (node:test), run by tests/browser.rs
// (`node --test tests/browser/unit.mjs`). The browser flows are in e2e.mjs.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  acceptPopupMessage,
  addressSpaceOf,
  agentOrigin,
  describe,
  detectSupport,
  endpointsOf,
  DEFAULT_STATUS_HOLD_MS,
  LanlinkError,
  nextStatusDelay,
  newNonce,
  shortCode,
  Linker,
  parseEndpoint,
} from "../../web/lanlink.js";

// The same vector as the doctest of `lanlink::confirm` and PROTOCOL.md (revision 1.4).
test("shortCode: the Rust crate's test vector, and every input matters", async () => {
  const link = {
    instanceId: "07070707-0707-4707-8707-070707070707",
    secret: "09".repeat(32),
    displayName: "alice@example.com",
    nonce: "01".repeat(16),
  };
  assert.equal(await shortCode(link), "401 257");
  assert.equal(await shortCode({ ...link, instanceId: link.instanceId.replace(/-/g, "") }), "401 257");
  assert.notEqual(await shortCode({ ...link, displayName: "mallory@example.com" }), "401 257");
  assert.notEqual(await shortCode({ ...link, nonce: "02".repeat(16) }), "401 257");
  assert.notEqual(await shortCode({ ...link, secret: "0a".repeat(32) }), "401 257");
  await assert.rejects(shortCode({ ...link, nonce: "01" }), LanlinkError);
  assert.match(await shortCode({ ...link, nonce: newNonce() }), /^\d{3} \d{3}$/);
});

test("newNonce: 32 hex characters, fresh each time", () => {
  const a = newNonce();
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.notEqual(a, newNonce());
});

test("addressSpaceOf: loopback, local (RFC 1918, link-local, ULA), else null", () => {
  const cases = {
    "127.0.0.1": "loopback",
    "127.255.1.2": "loopback",
    "::1": "loopback",
    "[::1]": "loopback",
    "10.0.0.1": "local",
    "172.16.0.1": "local",
    "172.31.255.255": "local",
    "192.168.1.50": "local",
    "169.254.3.4": "local",
    "fe80::1": "local",
    "fd12:3456::1": "local",
    "fc00::1": "local",
    "::ffff:192.168.1.5": "local",
    "172.15.0.1": null,
    "172.32.0.1": null,
    "100.64.0.7": null, // CGNAT is not local
    "8.8.8.8": null,
    "203.0.113.7": null,
    "2001:db8::1": null,
    "::ffff:8.8.8.8": null,
    "256.1.1.1": null,
    "192.168.1": null,
    "printer.local": null,
    "": null,
    "1.2.3.4 ": null,
  };
  for (const [ip, space] of Object.entries(cases)) {
    assert.equal(addressSpaceOf(ip), space, ip);
  }
});

test("agentOrigin: exact origins, IPv6 in brackets", () => {
  assert.equal(agentOrigin({ private_ip: "192.168.1.50", port: 8080 }), "http://192.168.1.50:8080");
  assert.equal(agentOrigin({ private_ip: "fe80::1", port: 80 }), "http://[fe80::1]");
  assert.equal(agentOrigin({ private_ip: "fd00::5", port: 7125 }), "http://[fd00::5]:7125");
});

test("detectSupport: the path for each browser", () => {
  const lna = function Request() {};
  lna.prototype = { targetAddressSpace: "unknown" };
  const old = function Request() {};
  old.prototype = {};
  const agent = { private_ip: "192.168.1.50", port: 8080 };
  const https = { pageUrl: "https://cloud.example/link", secureContext: true };
  const http = { pageUrl: "http://cloud.example/link", secureContext: false };
  assert.equal(detectSupport(agent, { ...https, request: lna }).path, "fetch-lna");
  assert.equal(detectSupport(agent, { ...https, request: old }).path, "popup");
  assert.equal(detectSupport(agent, { ...https, request: old }).mixedContent, true);
  assert.equal(detectSupport(agent, { ...http, request: old }).path, "fetch");
  // LNA needs a secure context to ask for the permission: an http page tries a plain fetch.
  assert.equal(detectSupport(agent, { ...http, request: lna }).path, "fetch");
  assert.equal(detectSupport({ private_ip: "127.0.0.1", port: 1 }, { ...https, request: lna }).addressSpace, "loopback");
  // A public address is never treated as local.
  assert.equal(detectSupport({ private_ip: "8.8.8.8", port: 80 }, { ...https, request: lna }).path, "popup");
  for (const env of [https, http]) {
    for (const request of [lna, old]) {
      assert.ok(detectSupport(agent, { ...env, request }).reason.length > 20);
    }
  }
});

test("acceptPopupMessage: only the agent's answer, from its window, for the instance", () => {
  const origin = "http://192.168.1.50:8080";
  const source = {};
  const instanceId = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90";
  const expected = { origin, instanceId, source };
  const secret = "9f".repeat(32);
  const good = { type: "lanlink-secret", version: 1, instance_id: instanceId, local_secret: secret };
  assert.deepEqual(acceptPopupMessage({ origin, source, data: good }, expected), { kind: "secret", secret });
  assert.deepEqual(
    acceptPopupMessage({ origin, source, data: { ...good, instance_id: instanceId.toUpperCase() } }, expected),
    { kind: "secret", secret },
  );
  const ignored = [
    { origin: "http://192.168.1.50:8081", source, data: good },
    { origin: "http://192.168.1.5:8080", source, data: good },
    { origin: "https://192.168.1.50:8080", source, data: good },
    { origin: "null", source, data: good },
    { origin, source: {}, data: good },
    { origin, source: null, data: good },
    { origin, source, data: { ...good, instance_id: "00000000-0000-4000-8000-000000000000" } },
    { origin, source, data: { ...good, instance_id: undefined } },
    { origin, source, data: { ...good, version: 2 } },
    { origin, source, data: { ...good, type: "other" } },
    { origin, source, data: { ...good, local_secret: "9f" } },
    { origin, source, data: { ...good, local_secret: "zz".repeat(32) } },
    { origin, source, data: { ...good, local_secret: 42 } },
    { origin, source, data: JSON.stringify(good) },
    { origin, source, data: null },
    { origin, source, data: { type: "lanlink-refused", version: 1, instance_id: instanceId, error: "<b>" } },
  ];
  for (const event of ignored) {
    assert.equal(acceptPopupMessage(event, expected), null, JSON.stringify({ ...event, source: undefined }));
  }
  assert.deepEqual(
    acceptPopupMessage({ origin, source, data: { type: "lanlink-refused", version: 1, instance_id: instanceId, error: "not_local" } }, expected),
    { kind: "refused", error: "not_local" },
  );
  const hello = { type: "lanlink-hello", version: 1, instance_id: instanceId };
  assert.deepEqual(acceptPopupMessage({ origin, source, data: hello }, expected), { kind: "hello" });
  for (const event of [
    { origin: "http://192.168.1.50:8081", source, data: hello },
    { origin, source: {}, data: hello },
    { origin, source, data: { ...hello, instance_id: "00000000-0000-4000-8000-000000000000" } },
    { origin, source, data: { ...hello, version: 0 } },
  ]) {
    assert.equal(acceptPopupMessage(event, expected), null);
  }
});

test("errors: words for every code, no secret", () => {
  for (const code of ["unauthorized", "locked_out", "wrong_secret", "not_local", "bad_origin", "unsupported_media_type", "popup_blocked", "secret_unavailable"]) {
    const err = new LanlinkError(code, { status: 403 });
    assert.equal(err.code, code);
    assert.equal(err.message, describe(code));
    assert.ok(!/[0-9a-f]{64}/.test(err.message));
    assert.ok(!err.message.includes(code), `${code} has words of its own`);
  }
  assert.match(describe("something_new"), /something_new/);
});

test("candidates: ordered, checked, never fetched outside the local policy; the second answers when the first fails", async () => {
  assert.deepEqual(parseEndpoint("192.168.1.20:5000"), { ip: "192.168.1.20", port: 5000 });
  assert.deepEqual(parseEndpoint("[fd00::5]:80"), { ip: "fd00::5", port: 80 });
  for (const bad of ["printer.local:80", "192.168.1.20", "192.168.1.20:0", "[fe80::1%eth0]:80", "1.2.3.4:99999", 7]) {
    assert.equal(parseEndpoint(bad), null, String(bad));
  }
  const instanceId = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90";
  const agent = {
    instance_id: instanceId,
    private_ip: "10.0.0.1", // unreachable
    port: 8080,
    info: { hostname: "", model: "", agent: "", agent_version: "" },
    candidates: [
      "203.0.113.9:8080", // public: never contacted
      "100.64.0.7:8080", // CGNAT: never contacted
      "10.0.0.1:8080", // the first again
      "10.0.0.2:8080", // never answers: times out
      "192.168.1.20:5000", // answers
      "[fd00::5]:80", // not reached
    ],
  };
  assert.deepEqual(
    endpointsOf(agent).map((e) => `${e.ip}:${e.port}`),
    ["10.0.0.1:8080", "10.0.0.2:8080", "192.168.1.20:5000", "fd00::5:80"],
  );
  /** @type {string[]} */
  const calls = [];
  const secret = "ab".repeat(32);
  const json = (status, body) => ({ ok: status < 300, status, json: async () => body });
  const saved = globalThis.fetch;
  globalThis.fetch = async (url, init = {}) => {
    const text = String(url);
    calls.push(text);
    if (text.startsWith("http://server.test/")) {
      if (init.method === "POST") {
        const { nonce, ...rest } = JSON.parse(init.body);
        assert.deepEqual(rest, { instance_id: instanceId, local_secret: secret });
        assert.match(nonce, /^[0-9a-f]{32}$/); // revision 1.4: a fresh nonce on every link
        return json(200, { instance_id: instanceId, state: "pending" });
      }
      return json(200, { instance_id: instanceId, state: "linked" });
    }
    if (text.startsWith("http://10.0.0.1:8080/")) throw new TypeError("Failed to fetch");
    if (text.startsWith("http://10.0.0.2:8080/")) {
      // Silent until aborted by the per-endpoint timeout.
      return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(new TypeError("aborted"))));
    }
    if (text.startsWith("http://192.168.1.20:5000/")) return json(200, { local_secret: secret });
    throw new Error(`unexpected fetch of ${text}`);
  };
  try {
    const linker = new Linker({ server: "http://server.test", token: "t", pollIntervalMs: 1, fetchTimeoutMs: 50 });
    const result = await linker.link(agent, { path: "fetch" });
    assert.equal(result.state, "linked");
    assert.equal(result.endpoint, "192.168.1.20:5000");
    assert.equal(result.attempts[0].endpoint, "192.168.1.20:5000");
    const agentCalls = calls.filter((c) => !c.startsWith("http://server.test/")).map((c) => new URL(c).host);
    assert.deepEqual(agentCalls, ["10.0.0.1:8080", "10.0.0.2:8080", "192.168.1.20:5000"]);
    for (const call of calls) {
      assert.ok(!call.includes("203.0.113.9") && !call.includes("100.64.0.7"), call);
    }
    // A refusal the agent explained is final: the next endpoint is not asked.
    calls.length = 0;
    globalThis.fetch = async (url) => {
      calls.push(String(url));
      return json(403, { error: "not_local" });
    };
    await assert.rejects(linker.link({ ...agent, private_ip: "192.168.1.20", port: 5000 }, { path: "fetch" }), (err) => err.code === "not_local");
    assert.equal(calls.length, 1);
  } finally {
    globalThis.fetch = saved;
  }
});

test("a lost answer to the link request: sent once, then the link's state decides", async () => {
  const instanceId = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90";
  const agent = {
    instance_id: instanceId,
    private_ip: "192.168.1.20",
    port: 5000,
    info: { hostname: "", model: "", agent: "", agent_version: "" },
  };
  const secret = "ab".repeat(32);
  const json = (status, body) => ({ ok: status < 300, status, json: async () => body });
  const saved = globalThis.fetch;
  try {
    for (const [lose, accepted] of [
      ["network", true],
      ["502", true],
      ["network", false],
    ]) {
      let links = 0;
      globalThis.fetch = async (url, init = {}) => {
        const text = String(url);
        if (text.startsWith("http://192.168.1.20:5000/")) return json(200, { local_secret: secret });
        if (init.method === "POST") {
          links += 1;
          // The server accepted (or not) and the answer never came back.
          if (lose === "network") throw new TypeError("Failed to fetch");
          return { ok: false, status: 502, json: async () => { throw new SyntaxError("html"); } };
        }
        return json(200, { instance_id: instanceId, state: accepted ? "linked" : "unknown" });
      };
      const linker = new Linker({ server: "http://server.test", token: "t", pollIntervalMs: 1 });
      const outcome = linker.link(agent, { path: "fetch" });
      if (accepted) {
        assert.equal((await outcome).state, "linked", lose);
      } else {
        // Never accepted: the request's own error stands.
        await assert.rejects(outcome, (err) => err.code === "network");
      }
      assert.equal(links, 1, `${lose}: the link request is sent once`);
    }
    // A refusal the server explained is final, and the state is not asked.
    let asked = 0;
    globalThis.fetch = async (url, init = {}) => {
      if (String(url).startsWith("http://192.168.1.20:5000/")) return json(200, { local_secret: secret });
      if (init.method !== "POST") asked += 1;
      return json(403, { error: "wrong_secret" });
    };
    const linker = new Linker({ server: "http://server.test", token: "t", pollIntervalMs: 1 });
    await assert.rejects(linker.link(agent, { path: "fetch" }), (err) => err.code === "wrong_secret");
    assert.equal(asked, 0);
  } finally {
    globalThis.fetch = saved;
  }
});

test("a device's redirect is refused: the secret fetch never follows it (real fetch, real sockets)", async () => {
  const http = await import("node:http");
  const listen = (handler) =>
    new Promise((resolve) => {
      const server = http.createServer(handler);
      server.listen(0, "127.0.0.1", () => resolve(server));
    });
  const instanceId = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90";
  const secret = "cd".repeat(32);
  let elsewhereHits = 0;
  // Where the redirect points: it would hand out a secret of its own choosing.
  const elsewhere = await listen((req, res) => {
    elsewhereHits += 1;
    res.writeHead(200, { "content-type": "application/json", "access-control-allow-origin": "*" });
    res.end(JSON.stringify({ local_secret: secret }));
  });
  const device = await listen((req, res) => {
    res.writeHead(307, { location: `http://127.0.0.1:${elsewhere.address().port}${req.url}`, "access-control-allow-origin": "*" });
    res.end();
  });
  const realFetch = globalThis.fetch;
  /** @type {string[]} */
  const linked = [];
  globalThis.fetch = async (url, init = {}) => {
    const text = String(url);
    if (text.startsWith("http://server.test/")) {
      if (init.method === "POST") linked.push(init.body);
      return { ok: true, status: 200, json: async () => ({ instance_id: instanceId, state: "pending" }) };
    }
    return realFetch(url, init);
  };
  try {
    const linker = new Linker({ server: "http://server.test", token: "t", pollIntervalMs: 1, fetchTimeoutMs: 2000 });
    const agent = {
      instance_id: instanceId,
      private_ip: "127.0.0.1",
      port: device.address().port,
      info: { hostname: "", model: "", agent: "", agent_version: "" },
    };
    await assert.rejects(linker.link(agent, { path: "fetch" }), LanlinkError);
    assert.equal(elsewhereHits, 0, "the redirect was followed");
    assert.deepEqual(linked, [], "a link was requested with a secret from elsewhere");
  } finally {
    globalThis.fetch = realFetch;
    device.close();
    elsewhere.close();
  }
});

test("nextStatusDelay: at once after a move, else one interval after sending (revision 1.6)", () => {
  assert.equal(nextStatusDelay({ sentAt: 1000, now: 1010, pollIntervalMs: 1000, moved: true }), 0);
  // Answered at once: no sooner than one interval after the request was sent.
  assert.equal(nextStatusDelay({ sentAt: 1000, now: 1010, pollIntervalMs: 1000, moved: false }), 990);
  // A held answer (the hold ended): at once.
  assert.equal(nextStatusDelay({ sentAt: 1000, now: 21000, pollIntervalMs: 1000, moved: false }), 0);
});

test("link status: asks with ?hold_ms=20000, re-asks at once after a held answer or a move, never spins on a server that answers at once", async () => {
  const instanceId = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90";
  const agent = {
    instance_id: instanceId,
    private_ip: "192.168.1.20",
    port: 5000,
    info: { hostname: "", model: "", agent: "", agent_version: "" },
  };
  const json = (status, body) => ({ ok: status < 300, status, json: async () => body });
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const saved = globalThis.fetch;
  const poll = 120;
  /**
   * Links with a fake server whose status route answers `plan[i]` (state, after ms) to the
   * i-th status request; returns each status request's URL, when it was sent and answered.
   */
  const run = async (plan, options = {}) => {
    /** @type {{url: string, sent: number, answered: number, signal: unknown}[]} */
    const asked = [];
    globalThis.fetch = async (url, init = {}) => {
      const text = String(url);
      if (text.startsWith("http://192.168.1.20:5000/")) return json(200, { local_secret: "ab".repeat(32) });
      if (init.method === "POST") return json(202, { instance_id: instanceId, state: "pending" });
      const entry = { url: text, sent: Date.now(), answered: 0, signal: init.signal };
      asked.push(entry);
      const [state, after] = plan[Math.min(asked.length - 1, plan.length - 1)];
      await wait(after);
      entry.answered = Date.now();
      if (state === "network") throw new TypeError("Failed to fetch");
      return json(200, { instance_id: instanceId, state });
    };
    const linker = new Linker({ server: "http://server.test", token: "t", pollIntervalMs: poll, ...options });
    const result = await linker.link(agent, { path: "fetch" });
    assert.equal(result.state, "linked");
    return asked;
  };
  try {
    assert.equal(DEFAULT_STATUS_HOLD_MS, 20000);
    // A server that answers at once (before 1.6, or no hold granted): one interval between
    // requests, counted from each sending.
    let asked = await run([["pending", 0], ["pending", 0], ["pending", 0], ["linked", 0]]);
    assert.equal(asked.length, 4);
    for (const entry of asked) {
      assert.ok(entry.url.endsWith(`/link/${instanceId}?hold_ms=20000`), entry.url);
      assert.ok(entry.signal instanceof AbortSignal && !entry.signal.aborted, "a held request can be given up");
    }
    for (let i = 1; i < asked.length; i += 1) {
      const gap = asked[i].sent - asked[i - 1].sent;
      assert.ok(gap >= poll - 5, `request ${i} came ${gap} ms after the last, before the interval: a spin`);
    }
    // A holding server: a held answer (after the interval) is followed at once; a moved state too.
    asked = await run([["pending", poll + 60], ["delivered", 10], ["linked", 10]]);
    assert.equal(asked.length, 3);
    for (let i = 1; i < asked.length; i += 1) {
      const gap = asked[i].sent - asked[i - 1].answered;
      assert.ok(gap < poll / 2, `request ${i} came ${gap} ms after the answer, not at once`);
    }
    // A held request that fails (a proxy cutting long requests): asked again without a hold.
    asked = await run([["network", 0], ["linked", 0]]);
    assert.deepEqual(asked.map((e) => e.url.includes("hold_ms=")), [true, false]);
    // statusHoldMs: 0 asks for none.
    asked = await run([["linked", 0]], { statusHoldMs: 0 });
    assert.ok(asked[0].url.endsWith(`/link/${instanceId}`), asked[0].url);
  } finally {
    globalThis.fetch = saved;
  }
});
