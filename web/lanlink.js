// lanlink.js: the linker role of the lanlink protocol, for browsers. No dependencies.
//
// Discover the devices on the user's network through the server, fetch the device's one-time
// local secret over the LAN, ask the server to link, and wait for the link's state; or mint a
// manual code for the user to type into the device.
//
// The secret is fetched in one of two ways, and the result says which (`path`):
//
// - "fetch-lna" / "fetch": the page fetches `GET {agent}{prefix}/secret?instance_id=…` itself,
//   with exact-origin CORS. Where the browser knows `targetAddressSpace` (Chrome 142+, Local
//   Network Access) the request says in advance that the target is "local" or "loopback": that
//   exempts it from mixed-content blocking on an https page, and the browser asks the user for the
//   local-network permission. Older Chromium sends a Private Network Access preflight instead,
//   which the agent answers.
// - "popup": a window opened on the agent's own popup page (a top-level navigation, outside LNA
//   and mixed content). The page says hello to this page with `postMessage`, addressed to this
//   page's exact origin (so the browser delivers it only here); this page answers "ready" to the
//   agent's exact origin; only then does the popup fetch the secret from its own origin and post
//   it back the same way. The listener here accepts a message only from that window, from the
//   agent's exact origin, for the instance asked for.
//
// The secret never goes into a URL, storage, or the console: it lives in a local variable between
// the agent's answer and the body of the link request (POST, never GET), and is dropped after.
//
// Types: lanlink.d.ts. Wire format: PROTOCOL.md.

/** The wire protocol version this module speaks. */
export const PROTOCOL_VERSION = 1;

/** The default route prefix, on the server and on the agent. */
export const DEFAULT_PREFIX = "/lanlink/v1";

/** The ways of obtaining the secret, in the order they are tried. */
export const PATHS = Object.freeze(["fetch-lna", "fetch", "popup"]);

/**
 * An error with a stable snake_case `code`: a refusal code from the server or the agent (see
 * PROTOCOL.md), or one of this module's own: `network` (the server did not answer),
 * `secret_unavailable` (no path could obtain the secret), `popup_blocked`, `popup_closed`,
 * `popup_timeout`, `link_expired`, `link_timeout`, `aborted`, `bad_reply`, `not_private_ip`.
 * Its message is in words a user understands ({@link describe}); it never holds a secret.
 */
export class LanlinkError extends Error {
  /**
   * @param {string} code stable snake_case code
   * @param {{status?: number, attempts?: Attempt[]}} [extra] HTTP status, paths tried
   */
  constructor(code, extra = {}) {
    super(describe(code));
    /** @type {string} */
    this.name = "LanlinkError";
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} */
    this.status = extra.status;
    /** @type {Attempt[]} */
    this.attempts = extra.attempts || [];
  }
}

/** @type {Readonly<Record<string, string>>} */
const WORDS = Object.freeze({
  // Server refusals.
  unauthorized: "Your sign-in was not accepted. Check your account token and try again.",
  locked_out: "Too many failed attempts from your network. Wait 10 minutes and try again.",
  already_linking: "This device is already being linked. Restart linking on the device to try again.",
  agent_not_found: "The device is no longer visible from your network. Make sure it is on and on the same network, then search again.",
  shared_network: "Your network looks shared with other households (a carrier's shared address, a dormitory, an office), so devices on it are not shown: use a code instead.",
  hidden_too_many_agents: "Two or more devices are in linking mode on your network, so none is shown: link them one at a time, or use a code.",
  too_many_agents: "Several devices are in linking mode on your network, so none is shown. Link them one at a time, or use a code.",
  agent_contested: "Something else on your network claims to be this device. Use a code instead.",
  wrong_secret: "The device's key did not match. Restart linking on the device and try again.",
  invalid_code: "That code is not valid. Get a new code and type it on the device.",
  code_space_exhausted: "No code is available right now. Try again in a minute.",
  unresolvable_client: "The server could not tell which network you are on.",
  malformed: "The request was not understood.",
  unsupported_media_type: "The page sent a request the server does not accept. Reload the page and try again.",
  // Agent refusals.
  not_discovering: "The device is not in linking mode (it may already be linked). Start linking on the device.",
  window_expired: "The device's linking time ran out. Start linking on the device again.",
  not_local: "This computer is not on the same local network as the device.",
  wrong_instance: "The device at that address is not the one you picked. Search again.",
  bad_host: "The device must be reached by its IP address.",
  // The agent's, and since the cross-site rule the server's user routes' too.
  bad_origin: "Linking is not accepted from this website's address.",
  not_top_level: "The device's window must open on its own, not inside a page.",
  // This module's own.
  network: "The server did not answer. Check your connection and try again.",
  bad_reply: "The server sent a reply this page does not understand.",
  not_private_ip: "The device gave an address outside your home network; it was skipped.",
  secret_unavailable: "Your browser could not reach the device directly. Allow access to devices on your local network, or use a code instead.",
  popup_blocked: "Your browser blocked the device's window. Click \u201cOpen the device's window\u201d to continue, or allow pop-ups for this site.",
  popup_closed: "The device's window was closed before it answered.",
  popup_timeout: "The device's window did not answer in time. Check that this computer is on the device's network, or use a code instead.",
  link_expired: "The link request expired before the device confirmed it. Try again.",
  link_timeout: "The device did not confirm the link in time. Check that it is online, then try again.",
  aborted: "Linking was cancelled.",
});

/**
 * Plain words for why discovery hides devices on the caller's network (a `hidden.reason` of the
 * discovery reply), or null when nothing is hidden. The words name and count no device.
 * @param {string | null} reason
 * @returns {string | null}
 */
export function hiddenWords(reason) {
  if (!reason) return null;
  if (reason === "too_many_agents") return WORDS.hidden_too_many_agents;
  if (reason === "shared_network") return WORDS.shared_network;
  return "Devices on your network are not shown for now: use a code instead.";
}

/**
 * Words a user understands for an error code, from the server, the agent or this module.
 * @param {string} code a snake_case code
 * @returns {string}
 */
export function describe(code) {
  return WORDS[code] || `Something went wrong (${code}).`;
}

/**
 * The LNA address space of an IP literal: "loopback" (127/8, ::1), "local" (RFC 1918,
 * link-local, ULA), or null for anything else (public, or not an IP literal).
 * @param {string} ip an IPv4 or IPv6 literal, IPv6 with or without brackets
 * @returns {"loopback" | "local" | null}
 */
export function addressSpaceOf(ip) {
  const text = String(ip).replace(/^\[|\]$/g, "").toLowerCase();
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    if ([1, 2, 3, 4].some((i) => Number(v4[i]) > 255)) return null;
    if (a === 127) return "loopback";
    if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return "local";
    if (a === 169 && b === 254) return "local";
    return null;
  }
  if (!text.includes(":") || !/^[0-9a-f:.]+$/.test(text)) return null;
  if (text === "::1") return "loopback";
  const mapped = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(text);
  if (mapped) return addressSpaceOf(mapped[1]);
  const first = parseInt(text.split(":")[0] || "0", 16);
  if ((first & 0xfe00) === 0xfc00) return "local"; // ULA fc00::/7
  if ((first & 0xffc0) === 0xfe80) return "local"; // link-local fe80::/10
  return null;
}

/**
 * The exact origin of an agent's local endpoint, e.g. `http://192.168.1.50:8080`.
 * @param {{private_ip: string, port: number}} agent a discovered agent
 * @returns {string}
 */
export function agentOrigin(agent) {
  const ip = String(agent.private_ip);
  const host = ip.includes(":") ? `[${ip.replace(/^\[|\]$/g, "")}]` : ip;
  return new URL(`http://${host}:${Number(agent.port)}`).origin;
}

/** The most candidates a discovered agent may list (protocol revision 1.3). */
export const MAX_CANDIDATES = 8;

/** How long, by default, {@link Linker#link} waits for one endpoint of a device: 3 s. */
export const DEFAULT_FETCH_TIMEOUT_MS = 3000;

/**
 * How long, by default, a status request asks the server to hold it while the link is on its
 * way (protocol revision 1.6, `?hold_ms=`): 20 s. The server answers when the link's state
 * moves, so the page shows "linked" within a round trip of the device's redemption.
 */
export const DEFAULT_STATUS_HOLD_MS = 20000;

/** The longest hold a request may ask for (protocol revision 1.6): 25 s. */
export const MAX_HOLD_MS = 25000;

/** How much longer than its hold a held status request may take before it is given up: 10 s. */
export const HELD_REQUEST_MARGIN_MS = 10000;

/**
 * When to ask a link's state again (protocol revision 1.6), in milliseconds from now: at once
 * when the last answer showed a new state (a held request answered on the change), else one
 * poll interval after the last request was sent (at once after a held answer, which comes at
 * the hold's end; never sooner when a server answers at once, one before 1.6 or one that
 * grants no hold, so the page never asks as fast as the server answers).
 * @param {{sentAt: number, now: number, pollIntervalMs: number, moved: boolean}} when
 * @returns {number}
 */
export function nextStatusDelay({ sentAt, now, pollIntervalMs, moved }) {
  if (moved) return 0;
  return Math.max(0, sentAt + pollIntervalMs - now);
}

/**
 * Reads a socket address as the server writes it: `"192.168.1.20:5000"` or `"[fd00::5]:5000"`.
 * Null for anything else (a host name, no port, port 0, a zone id).
 * @param {unknown} text
 * @returns {{ip: string, port: number} | null}
 */
export function parseEndpoint(text) {
  if (typeof text !== "string") return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { ip: m[1] || m[2], port };
}

/**
 * An endpoint as the server writes it: `"192.168.1.20:5000"`, `"[fd00::5]:5000"`.
 * @param {{ip: string, port: number}} endpoint
 * @returns {string}
 */
export function endpointText(endpoint) {
  const ip = String(endpoint.ip).replace(/^\[|\]$/g, "");
  return `${ip.includes(":") ? `[${ip}]` : ip}:${Number(endpoint.port)}`;
}

/**
 * Every endpoint of a discovered device in the order to try them (protocol revision 1.3): its
 * `private_ip:port`, then its `candidates` as announced, without repeats, each passing the same
 * check as `private_ip` ({@link addressSpaceOf}: private, link-local, ULA or loopback). An
 * endpoint that fails it is left out, so it is never contacted.
 * @param {{private_ip: string, port: number, candidates?: readonly string[]}} agent
 * @returns {{ip: string, port: number}[]}
 */
export function endpointsOf(agent) {
  /** @type {{ip: string, port: number}[]} */
  const out = [];
  /** @type {Set<string>} */
  const seen = new Set();
  const first = { ip: String(agent.private_ip).replace(/^\[|\]$/g, ""), port: Number(agent.port) };
  const rest = Array.isArray(agent.candidates) ? agent.candidates.slice(0, MAX_CANDIDATES).map(parseEndpoint) : [];
  for (const endpoint of [first, ...rest]) {
    if (!endpoint || addressSpaceOf(endpoint.ip) === null) continue;
    if (!Number.isInteger(endpoint.port) || endpoint.port < 1 || endpoint.port > 65535) continue;
    const key = agentOrigin({ private_ip: endpoint.ip, port: endpoint.port });
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(endpoint);
  }
  return out;
}

/**
 * What this browser supports, and the path {@link Linker#link} tries first for `agent`.
 *
 * - `fetch-lna`: `targetAddressSpace` is known (Chrome 142+): a direct fetch, exempt from mixed
 *   content, behind the browser's local-network permission prompt.
 * - `fetch`: no LNA, but the page is not https or the agent is https, so no mixed content: a
 *   direct CORS fetch (older Chromium adds the PNA preflight).
 * - `popup`: an https page and an http agent in a browser without LNA (Firefox, Safari, older
 *   Chromium): a direct fetch would be blocked as mixed content, so the agent's popup page.
 *
 * @param {{private_ip: string, port: number}} [agent] the agent to reach (default: a private
 *   http address)
 * @param {{pageUrl?: string, request?: unknown, secureContext?: boolean}} [env] overrides for
 *   tests; defaults read from the page
 * @returns {Support}
 */
export function detectSupport(agent, env = {}) {
  const g = /** @type {any} */ (globalThis);
  const RequestCtor = env.request !== undefined ? env.request : g.Request;
  const lna = !!RequestCtor && "targetAddressSpace" in RequestCtor.prototype;
  const pageUrl = env.pageUrl || (g.location ? g.location.href : "http://localhost/");
  const secureContext = env.secureContext !== undefined ? env.secureContext : !!g.isSecureContext;
  const pageHttps = new URL(pageUrl).protocol === "https:";
  const mixedContent = pageHttps; // the agent speaks plain http
  const space = agent ? addressSpaceOf(agent.private_ip) : "local";
  /** @type {Support["path"]} */
  let path;
  let reason;
  if (lna && secureContext && space) {
    path = "fetch-lna";
    reason = "This browser supports Local Network Access: it reaches the device directly after you allow access to devices on your local network.";
  } else if (!mixedContent) {
    path = "fetch";
    reason = "This page is not served over https, so the browser reaches the device directly.";
  } else {
    path = "popup";
    reason = "This browser cannot reach a local device from an https page directly; a small window from the device will pass on its key.";
  }
  return Object.freeze({ lna, secureContext, mixedContent, addressSpace: space, path, reason });
}

/**
 * Decides whether a `message` event comes from the agent's popup page. Accepts only an event
 * whose `origin` is exactly `expected.origin`, whose `source` is `expected.source` (when given),
 * and whose data is version 1, for `expected.instanceId`, and one of: `lanlink-hello` (the page
 * asks whether its opener is the origin it was told; answered with `lanlink-ready`),
 * `lanlink-secret` with a 64-hex-digit secret, or `lanlink-refused` with a code. Anything else is
 * ignored (null).
 *
 * @param {{origin: string, source?: unknown, data: unknown}} event a MessageEvent
 * @param {{origin: string, instanceId: string, source?: unknown}} expected
 * @returns {{kind: "hello"} | {kind: "secret", secret: string} | {kind: "refused", error: string} | null}
 */
export function acceptPopupMessage(event, expected) {
  if (!event || event.origin !== expected.origin) return null;
  if (expected.source !== undefined && event.source !== expected.source) return null;
  const data = /** @type {any} */ (event.data);
  if (!data || typeof data !== "object" || data.version !== PROTOCOL_VERSION) return null;
  if (typeof data.instance_id !== "string") return null;
  if (data.instance_id.toLowerCase() !== String(expected.instanceId).toLowerCase()) return null;
  if (data.type === "lanlink-secret") {
    if (typeof data.local_secret !== "string" || !/^[0-9a-fA-F]{64}$/.test(data.local_secret)) {
      return null;
    }
    return { kind: "secret", secret: data.local_secret };
  }
  if (data.type === "lanlink-hello") {
    return { kind: "hello" };
  }
  if (data.type === "lanlink-refused" && typeof data.error === "string" && /^[a-z_]{1,40}$/.test(data.error)) {
    return { kind: "refused", error: data.error };
  }
  return null;
}

/** @param {string} hex @returns {Uint8Array} */
function hexBytes(hex) {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new LanlinkError("bad_reply");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** @param {Uint8Array} bytes @returns {string} */
function bytesHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {...Uint8Array} parts @returns {Promise<Uint8Array>} */
async function sha256(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.length;
  }
  return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", all));
}

/**
 * A fresh confirmation nonce (protocol revision 1.4): 16 bytes from the browser's CSPRNG, as 32
 * lowercase hex characters.
 *
 * @returns {string}
 */
export function newNonce() {
  return bytesHex(globalThis.crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * The short code of a link (protocol revision 1.4), as a device with the `compare` policy shows
 * it: the first 8 bytes of SHA-256("lanlink/v1/confirm\0" ‖ instance ‖ commitment ‖
 * len(name) ‖ name ‖ nonce) as a big-endian integer, mod 10^6, written "123 456". The
 * commitment is SHA-256("lanlink/v1/local-secret-commitment\0" ‖ instance ‖ secret).
 *
 * @param {{instanceId: string, secret: string, displayName: string, nonce: string}} link
 * @returns {Promise<string>}
 */
export async function shortCode({ instanceId, secret, displayName, nonce }) {
  const text = new TextEncoder();
  const instance = hexBytes(instanceId.replace(/-/g, ""));
  const nonceBytes = hexBytes(nonce);
  if (instance.length !== 16 || nonceBytes.length !== 16) throw new LanlinkError("bad_reply");
  const commitment = await sha256(text.encode("lanlink/v1/local-secret-commitment\0"), instance, hexBytes(secret));
  const name = text.encode(displayName);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, name.length, false);
  const digest = await sha256(text.encode("lanlink/v1/confirm\0"), instance, commitment, len, name, nonceBytes);
  const value = new DataView(digest.buffer).getBigUint64(0, false) % 1000000n;
  const digits = value.toString().padStart(6, "0");
  return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}

/**
 * Waits `ms` milliseconds, or rejects with `aborted`.
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>}
 */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(new LanlinkError("aborted"));
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new LanlinkError("aborted"));
      }, { once: true });
    }
  });
}

/**
 * The linker role in a browser: one per page and account.
 *
 * ```js
 * import { Linker } from "/lanlink.js";
 * const linker = new Linker({ token });           // or { credentials: "same-origin" } with a session cookie
 * const [device] = await linker.discover();
 * const result = await linker.link(device, { onProgress: (p) => show(p.message) });
 * // result.state === "linked"; result.path tells how the secret was obtained
 * ```
 */
export class Linker {
  /**
   * @param {LinkerOptions} [options]
   */
  constructor(options = {}) {
    const g = /** @type {any} */ (globalThis);
    /** @private */
    this._server = String(options.server || (g.location ? g.location.origin : "")).replace(/\/+$/, "");
    /** @private */
    this._prefix = String(options.prefix || DEFAULT_PREFIX).replace(/\/+$/, "");
    /** @private */
    this._agentPrefix = String(options.agentPrefix || this._prefix).replace(/\/+$/, "");
    /** @private The account credential: held in memory only, never stored. */
    this._token = options.token || null;
    /** @private */
    this._credentials = options.credentials || "same-origin";
    /** @private */
    this._pageOrigin = options.pageOrigin || (g.location ? g.location.origin : "");
    /** @private */
    this._popupTimeoutMs = options.popupTimeoutMs ?? 60000;
    /** @private */
    this._pollIntervalMs = options.pollIntervalMs ?? 1000;
    /** @private */
    this._linkTimeoutMs = options.linkTimeoutMs ?? 120000;
    /** @private */
    this._window = options.window || g;
    /** @private */
    this._fetchTimeoutMs = options.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    /** @private */
    this._statusHoldMs = Math.max(0, Math.min(MAX_HOLD_MS, Math.floor(Number(options.statusHoldMs ?? DEFAULT_STATUS_HOLD_MS)) || 0));
  }

  /**
   * Calls a user route of the server.
   * @private
   * @param {string} method
   * @param {string} route path below the prefix
   * @param {unknown} [body] JSON body
   * @param {AbortSignal} [signal]
   * @param {number} [timeoutMs] give the request up (as `network`) after this long
   * @returns {Promise<any>}
   */
  async _api(method, route, body, signal, timeoutMs) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (this._token) headers.Authorization = `Bearer ${this._token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    /** @type {AbortController | null} */
    const controller = timeoutMs === undefined ? null : new AbortController();
    const onAbort = () => controller && controller.abort();
    const timer = controller ? setTimeout(() => controller.abort(), timeoutMs) : undefined;
    if (controller && signal) {
      if (signal.aborted) controller.abort();
      signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      response = await fetch(`${this._server}${this._prefix}${route}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: this._credentials,
        cache: "no-store",
        signal: controller ? controller.signal : signal,
      });
    } catch (err) {
      if (signal && signal.aborted) throw new LanlinkError("aborted");
      throw new LanlinkError("network");
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      if (controller && signal) signal.removeEventListener("abort", onAbort);
    }
    let json = null;
    try {
      json = await response.json();
    } catch (_) {
      json = null;
    }
    if (!response.ok) {
      const code = json && typeof json.error === "string" ? json.error : "bad_reply";
      throw new LanlinkError(code, { status: response.status });
    }
    if (!json || typeof json !== "object") throw new LanlinkError("bad_reply", { status: response.status });
    return json;
  }

  /**
   * The devices in linking mode on the caller's network, as the server sees it. Entries whose
   * `private_ip` is not private are dropped (PROTOCOL.md).
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<DiscoveredAgent[]>}
   */
  async discover(options = {}) {
    return (await this.find(options)).agents;
  }

  /**
   * {@link Linker#discover} with the reason, if the server hides devices on the caller's
   * network (protocol revision 1.2): `hidden` is `"too_many_agents"`, `"shared_network"` or
   * null; `message` says it in plain words (null when nothing is hidden). Offer the manual code
   * when `hidden` is set.
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<{agents: DiscoveredAgent[], hidden: string | null, message: string | null}>}
   */
  async find(options = {}) {
    const reply = await this._api("GET", "/discover", undefined, options.signal);
    if (!Array.isArray(reply.agents)) throw new LanlinkError("bad_reply");
    const reason = reply.hidden && typeof reply.hidden.reason === "string" ? reply.hidden.reason : null;
    return Object.freeze({ agents: this._agents(reply.agents), hidden: reason, message: hiddenWords(reason) });
  }

  /**
   * The well-formed, private entries of a discovery reply.
   * @param {any[]} list
   * @returns {DiscoveredAgent[]}
   */
  _agents(list) {
    return list.filter(
      (/** @type {any} */ a) =>
        a && typeof a.instance_id === "string" && addressSpaceOf(a.private_ip) !== null &&
        Number.isInteger(a.port) && a.port > 0 && a.port < 65536,
    ).map((/** @type {any} */ a) => Object.freeze({
      instance_id: a.instance_id,
      private_ip: a.private_ip,
      port: a.port,
      info: Object.freeze({
        hostname: String((a.info && a.info.hostname) || ""),
        model: String((a.info && a.info.model) || ""),
        agent: String((a.info && a.info.agent) || ""),
        agent_version: String((a.info && a.info.agent_version) || ""),
      }),
      // Revision 1.3: further endpoints, as announced (checked again when linking).
      candidates: Object.freeze(
        (Array.isArray(a.candidates) ? a.candidates : [])
          .filter((/** @type {unknown} */ c) => parseEndpoint(c) !== null)
          .slice(0, MAX_CANDIDATES)
          .map((/** @type {unknown} */ c) => String(c)),
      ),
    }));
  }

  /**
   * A manual code for the account: the user types it into the device.
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<ManualCode>}
   */
  async mintCode(options = {}) {
    const reply = await this._api("POST", "/codes", undefined, options.signal);
    if (typeof reply.code !== "string") throw new LanlinkError("bad_reply");
    return Object.freeze({ code: reply.code, expiresAt: new Date(reply.expires_at) });
  }

  /**
   * The state of this account's link to an instance: "pending", "delivered", "linked" or
   * "unknown". With `holdMs` (protocol revision 1.6, at most 25000), the server may hold the
   * request while the link is on its way and answer when its state moves or the hold ends; the
   * request is given up (`network`) `HELD_REQUEST_MARGIN_MS` after the hold. A server before
   * 1.6 answers at once.
   * @param {string} instanceId
   * @param {{signal?: AbortSignal, holdMs?: number}} [options]
   * @returns {Promise<LinkState>}
   */
  async linkState(instanceId, options = {}) {
    const hold = Math.max(0, Math.min(MAX_HOLD_MS, Math.floor(Number(options.holdMs ?? 0)) || 0));
    const route = `/link/${encodeURIComponent(instanceId)}${hold > 0 ? `?hold_ms=${hold}` : ""}`;
    const reply = hold > 0
      ? await this._api("GET", route, undefined, options.signal, hold + HELD_REQUEST_MARGIN_MS)
      : await this._api("GET", route, undefined, options.signal);
    if (typeof reply.state !== "string") throw new LanlinkError("bad_reply");
    return /** @type {LinkState} */ (reply.state);
  }

  /**
   * Fetches the secret directly (paths "fetch-lna" and "fetch") from each endpoint of `agent`
   * in turn ({@link endpointsOf}), giving each `fetchTimeoutMs`: an endpoint that cannot be
   * reached (or does not answer in time) moves on to the next; an answer the agent explained
   * (a refusal it sent) ends the path at once.
   * @private
   * @param {DiscoveredAgent} agent
   * @param {boolean} lna whether to declare `targetAddressSpace`
   * @param {AbortSignal} [signal]
   * @returns {Promise<{secret: string, endpoint: string}>} the secret, hex, and the endpoint that answered
   */
  async _fetchFromEndpoints(agent, lna, signal) {
    /** @type {unknown} */
    let last = new LanlinkError("secret_unavailable");
    for (const endpoint of endpointsOf(agent)) {
      const at = { ...agent, private_ip: endpoint.ip, port: endpoint.port };
      const controller = new AbortController();
      const onAbort = () => controller.abort();
      if (signal) {
        if (signal.aborted) throw new LanlinkError("aborted");
        signal.addEventListener("abort", onAbort, { once: true });
      }
      const timer = setTimeout(() => controller.abort(), this._fetchTimeoutMs);
      try {
        const secret = await this._fetchSecret(at, lna, controller.signal);
        return { secret, endpoint: endpointText(endpoint) };
      } catch (err) {
        if (signal && signal.aborted) throw new LanlinkError("aborted");
        // A refusal the agent sent (and CORS let us read) is the agent's word, at any address.
        if (err instanceof LanlinkError && err.code !== "bad_reply") throw err;
        last = err;
      } finally {
        clearTimeout(timer);
        if (signal) signal.removeEventListener("abort", onAbort);
      }
    }
    throw last;
  }

  /**
   * Fetches the secret directly from one endpoint.
   * @private
   * @param {DiscoveredAgent} agent
   * @param {boolean} lna whether to declare `targetAddressSpace`
   * @param {AbortSignal} [signal]
   * @returns {Promise<string>} the secret, hex
   */
  async _fetchSecret(agent, lna, signal) {
    const url = `${agentOrigin(agent)}${this._agentPrefix}/secret?instance_id=${encodeURIComponent(agent.instance_id)}`;
    /** @type {RequestInit & {targetAddressSpace?: string}} */
    const init = {
      method: "GET",
      mode: "cors",
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      // A device's answer is its own: a redirect would send the request to a host that the
      // address rules above never checked (a public one included). Refused, as the Rust linker
      // refuses it.
      redirect: "error",
      signal,
    };
    if (lna) init.targetAddressSpace = addressSpaceOf(agent.private_ip) || "local";
    // A refused request has no CORS headers: the browser reports it as a TypeError, like LNA
    // denials, mixed-content blocks and unreachable hosts. All mean "this path did not work".
    const response = await fetch(url, init);
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      throw new LanlinkError(json && typeof json.error === "string" ? json.error : "bad_reply", { status: response.status });
    }
    const secret = json && json.local_secret;
    if (typeof secret !== "string" || !/^[0-9a-fA-F]{64}$/.test(secret)) throw new LanlinkError("bad_reply");
    return secret;
  }

  /**
   * Obtains the secret through the agent's popup page. Must start while the page still has the
   * user's click (transient activation), or the browser blocks the window (`popup_blocked`).
   * @private
   * @param {DiscoveredAgent} agent
   * @param {AbortSignal} [signal]
   * @returns {Promise<{secret: string, ignored: number}>}
   */
  _popupSecret(agent, signal) {
    const win = this._window;
    const origin = agentOrigin(agent);
    const url = `${origin}${this._agentPrefix}/popup?instance_id=${encodeURIComponent(agent.instance_id)}&origin=${encodeURIComponent(this._pageOrigin)}`;
    return new Promise((resolve, reject) => {
      /** @type {any} */
      let popup = null;
      let ignored = 0;
      let done = false;
      const finish = (/** @type {() => void} */ settle) => {
        if (done) return;
        done = true;
        win.removeEventListener("message", onMessage);
        clearTimeout(timer);
        clearInterval(watcher);
        try {
          if (popup && !popup.closed) popup.close();
        } catch (_) {
          /* a cross-origin window may refuse; it closes itself */
        }
        settle();
      };
      const onMessage = (/** @type {MessageEvent} */ event) => {
        const verdict = acceptPopupMessage(event, { origin, instanceId: agent.instance_id, source: popup });
        if (!verdict) {
          ignored += 1;
          return;
        }
        if (verdict.kind === "hello") {
          // The page proved its origin and window; answer to exactly that origin, never "*".
          popup.postMessage({ type: "lanlink-ready", version: PROTOCOL_VERSION, instance_id: agent.instance_id }, origin);
          return;
        }
        if (verdict.kind === "secret") finish(() => resolve({ secret: verdict.secret, ignored }));
        else finish(() => reject(new LanlinkError(verdict.error)));
      };
      // Listen before opening, so an early answer is not missed.
      win.addEventListener("message", onMessage);
      const timer = setTimeout(() => finish(() => reject(new LanlinkError("popup_timeout"))), this._popupTimeoutMs);
      let watcher = 0;
      if (signal) {
        signal.addEventListener("abort", () => finish(() => reject(new LanlinkError("aborted"))), { once: true });
      }
      // No "noopener": the popup page needs window.opener to answer.
      popup = win.open(url, "lanlink-device", "popup,width=480,height=360");
      if (!popup) {
        finish(() => reject(new LanlinkError("popup_blocked")));
        return;
      }
      watcher = setInterval(() => {
        if (popup.closed) {
          // Give a message posted just before closing the time to arrive.
          setTimeout(() => finish(() => reject(new LanlinkError("popup_closed"))), 500);
        }
      }, 250);
    });
  }

  /**
   * Links `agent` to the account: obtains the secret (the best path first, the popup as the
   * fallback), asks the server to link, and waits until the link is "linked".
   *
   * Call it from a click handler: the popup fallback needs the user's click.
   *
   * @param {DiscoveredAgent} agent a device from {@link Linker#discover}
   * @param {LinkOptions} [options]
   * @returns {Promise<LinkResult>}
   */
  async link(agent, options = {}) {
    const { signal } = options;
    const progress = (/** @type {Progress["step"]} */ step, /** @type {{path?: SecretPath, shortCode?: string, message?: string}} */ extra = {}) => {
      if (options.onProgress) {
        try {
          options.onProgress(Object.freeze({ step, message: STEP_WORDS[step], ...extra }));
        } catch (_) {
          /* a failing progress callback must not break linking */
        }
      }
    };
    if (addressSpaceOf(agent.private_ip) === null) throw new LanlinkError("not_private_ip");
    const support = detectSupport(agent);
    /** @type {Attempt[]} */
    const attempts = [];
    /** @type {SecretPath[]} */
    const order = options.path
      ? [options.path]
      : support.path === "popup"
        ? ["popup"]
        : [support.path, "popup"];
    /** @type {string | null} */
    let secret = null;
    /** @type {SecretPath | null} */
    let path = null;
    /** @type {string | null} */
    let endpoint = null;
    let ignoredMessages = 0;
    for (const candidate of order) {
      progress(candidate === "popup" ? "popup" : "secret", { path: candidate });
      try {
        if (candidate === "popup") {
          // The popup opens on the device's first endpoint (a window needs the user's click,
          // so it is not tried address after address).
          const got = await this._popupSecret(agent, signal);
          secret = got.secret;
          ignoredMessages = got.ignored;
          endpoint = endpointText({ ip: String(agent.private_ip), port: Number(agent.port) });
        } else {
          const got = await this._fetchFromEndpoints(agent, candidate === "fetch-lna", signal);
          secret = got.secret;
          endpoint = got.endpoint;
        }
        path = candidate;
        attempts.push(Object.freeze({ path: candidate, outcome: "ok", endpoint }));
        break;
      } catch (err) {
        if (signal && signal.aborted) throw new LanlinkError("aborted", { attempts });
        const code = err instanceof LanlinkError ? err.code : "blocked";
        attempts.push(Object.freeze({ path: candidate, outcome: code }));
        // A refusal the agent could explain (it was read) is final: another path gets the same.
        if (err instanceof LanlinkError && err.code !== "bad_reply" && !err.code.startsWith("popup_")) {
          throw new LanlinkError(err.code, { status: err.status, attempts });
        }
      }
    }
    if (secret === null || path === null) {
      const last = attempts[attempts.length - 1];
      const code = last && last.outcome.startsWith("popup_") ? last.outcome : "secret_unavailable";
      throw new LanlinkError(code, { attempts });
    }
    progress("linking", { path });
    // A fresh nonce per request (revision 1.4): the device with the `compare` policy derives the
    // same short code from it.
    const nonce = newNonce();
    /** @type {string | undefined} */
    let code;
    // A link request whose answer is lost (no answer, a gateway's 502-504, a reply that cannot
    // be read) may have been accepted: it is not sent again (a copy is refused already_linking
    // while the device links); the link's state is asked instead, and the error stands only if
    // the server knows no link.
    /** @type {LanlinkError | null} */
    let lost = null;
    try {
      const accepted = await this._api(
        "POST",
        "/link",
        { instance_id: agent.instance_id, local_secret: secret, nonce },
        signal,
      );
      const name = accepted && typeof accepted.display_name === "string" ? accepted.display_name : null;
      if (name !== null) {
        code = await shortCode({ instanceId: agent.instance_id, secret, displayName: name, nonce });
      }
    } catch (err) {
      if (!(err instanceof LanlinkError)) throw err;
      const status = err.status;
      const unanswered =
        err.code === "network" ||
        (err.code === "bad_reply" && status !== undefined && ((status >= 200 && status < 300) || (status >= 502 && status <= 504)));
      lost = new LanlinkError(err.code, { status, attempts });
      if (!unanswered) throw lost;
    } finally {
      secret = null;
    }
    /** The words for `step`, with the short code when there is one. */
    const withCode = (/** @type {Progress["step"]} */ step) =>
      code === undefined
        ? { path }
        : {
            path,
            shortCode: code,
            message: `${STEP_WORDS[step]} If your device asks you to confirm, check that it shows ${code} and approve it there; if it shows another code, refuse it.`,
          };
    if (code !== undefined) progress("confirm", withCode("confirm"));
    progress("pending", withCode("pending"));
    const deadline = Date.now() + this._linkTimeoutMs;
    let seen = "pending";
    // Revision 1.6: each request asks to be held while the link is on its way (never past the
    // deadline); a held request that fails (a proxy that cuts long requests) is not asked again.
    let holdMs = this._statusHoldMs;
    for (;;) {
      const sentAt = Date.now();
      const hold = Math.min(holdMs, Math.max(0, deadline - sentAt));
      /** @type {LinkState} */
      let state;
      try {
        state = await this.linkState(agent.instance_id, { signal, holdMs: hold });
      } catch (err) {
        const gateway = err instanceof LanlinkError && (err.code === "network" ||
          (err.code === "bad_reply" && err.status !== undefined && err.status >= 502 && err.status <= 504));
        if (hold === 0 || !gateway) throw err;
        holdMs = 0;
        state = /** @type {LinkState} */ (seen);
      }
      if (state === "linked") break;
      if (state === "unknown") throw lost || new LanlinkError("link_expired", { attempts });
      const moved = state !== seen;
      if (moved) {
        seen = state;
        progress(state === "delivered" ? "delivered" : "pending", withCode(state === "delivered" ? "delivered" : "pending"));
      }
      if (Date.now() > deadline) throw new LanlinkError("link_timeout", { attempts });
      const wait = nextStatusDelay({ sentAt, now: Date.now(), pollIntervalMs: this._pollIntervalMs, moved });
      if (wait > 0) await sleep(wait, signal);
    }
    progress("linked", { path });
    return Object.freeze({
      instanceId: agent.instance_id,
      state: "linked",
      path,
      endpoint,
      support,
      attempts: Object.freeze(attempts),
      ignoredMessages,
      shortCode: code,
    });
  }
}

/** @type {Readonly<Record<Progress["step"], string>>} */
const STEP_WORDS = Object.freeze({
  secret: "Asking the device for its one-time key over your local network…",
  popup: "Opening a small window from the device to get its one-time key…",
  linking: "Sending the key to your account…",
  pending: "Waiting for the device to check in…",
  confirm: "Your account asked to link the device.",
  delivered: "The device got the request and is confirming…",
  linked: "Linked.",
});

/**
 * @typedef {import("./lanlink.d.ts").SecretPath} SecretPath
 * @typedef {import("./lanlink.d.ts").Support} Support
 * @typedef {import("./lanlink.d.ts").Attempt} Attempt
 * @typedef {import("./lanlink.d.ts").DiscoveredAgent} DiscoveredAgent
 * @typedef {import("./lanlink.d.ts").ManualCode} ManualCode
 * @typedef {import("./lanlink.d.ts").LinkState} LinkState
 * @typedef {import("./lanlink.d.ts").LinkerOptions} LinkerOptions
 * @typedef {import("./lanlink.d.ts").LinkOptions} LinkOptions
 * @typedef {import("./lanlink.d.ts").LinkResult} LinkResult
 * @typedef {import("./lanlink.d.ts").Progress} Progress
 */
