// Types for lanlink.js, the browser linker of the lanlink protocol (see PROTOCOL.md).

/** The wire protocol version this module speaks. */
export const PROTOCOL_VERSION: 1;

/** The default route prefix, on the server and on the agent. */
export const DEFAULT_PREFIX: "/lanlink/v1";

/** How the secret is obtained: a direct fetch declaring the LNA target address space, a plain
 * direct fetch (CORS, and the PNA preflight in older Chromium), or the agent's popup page. */
export type SecretPath = "fetch-lna" | "fetch" | "popup";

/** The ways of obtaining the secret, in the order they are tried. */
export const PATHS: readonly SecretPath[];

/** The state of a link request, as the server reports it. */
export type LinkState = "pending" | "delivered" | "linked" | "unknown";

/** Device information an agent announces (any field may be empty). */
export interface DeviceInfo {
  readonly hostname: string;
  readonly model: string;
  readonly agent: string;
  readonly agent_version: string;
}

/** A device in linking mode on the caller's network. */
export interface DiscoveredAgent {
  /** UUID v4, lowercase hyphenated. */
  readonly instance_id: string;
  /** A private (RFC 1918, link-local, ULA) or loopback IP literal. */
  readonly private_ip: string;
  readonly port: number;
  readonly info: DeviceInfo;
  /** Further endpoints to try after `private_ip:port`, in order (`"192.168.1.20:5000"`,
   * `"[fd00::5]:5000"`; protocol revision 1.3; empty from older servers). Each is checked like
   * `private_ip` before it is contacted. */
  readonly candidates?: readonly string[];
}

/** A manual code for the user to type into the device. */
export interface ManualCode {
  readonly code: string;
  readonly expiresAt: Date;
}

/** What the browser supports, and which path is tried first. */
export interface Support {
  /** `targetAddressSpace` is known (Chrome 142+, Local Network Access). */
  readonly lna: boolean;
  /** The page is a secure context (https, or a loopback http page). */
  readonly secureContext: boolean;
  /** The page is https and the agent plain http: a fetch without LNA would be blocked. */
  readonly mixedContent: boolean;
  /** The agent's LNA address space, or null when its address is not private. */
  readonly addressSpace: "loopback" | "local" | null;
  /** The path tried first. */
  readonly path: SecretPath;
  /** Why, in words a user understands. */
  readonly reason: string;
}

/** One path tried for the secret, and how it ended: "ok" or an error code ("blocked" for a
 * fetch the browser refused: CORS, LNA permission denied, mixed content, unreachable). */
export interface Attempt {
  readonly path: SecretPath;
  readonly outcome: string;
  /** The endpoint that answered, for an "ok" outcome (revision 1.3). */
  readonly endpoint?: string | null;
}

/** A step of {@link Linker.link}, with words for the user. */
export interface Progress {
  readonly step: "secret" | "popup" | "linking" | "confirm" | "pending" | "delivered" | "linked";
  readonly message: string;
  readonly path?: SecretPath;
  /** The link's short code (revision 1.4), "123 456", once the server accepted the link. */
  readonly shortCode?: string;
}

/** Options of {@link Linker}. */
export interface LinkerOptions {
  /** The server's origin (default: the page's). */
  server?: string;
  /** The server's route prefix (default "/lanlink/v1"). */
  prefix?: string;
  /** The agent's route prefix (default: `prefix`). */
  agentPrefix?: string;
  /** A bearer token for the user routes, held in memory only. Omit it to rely on cookies. */
  token?: string | null;
  /** `fetch` credentials mode for the server (default "same-origin"). */
  credentials?: RequestCredentials;
  /** This page's origin, the popup's postMessage target (default: `location.origin`). */
  pageOrigin?: string;
  /** How long the popup may take to answer (default 60000 ms). */
  popupTimeoutMs?: number;
  /** How often to ask for the link's state (default 1000 ms). */
  pollIntervalMs?: number;
  /** How long to wait for "linked" (default 120000 ms). */
  linkTimeoutMs?: number;
  /** How long to wait for one endpoint of a device before trying its next (revision 1.3;
   * default 3000 ms). */
  fetchTimeoutMs?: number;
  /** How long each status request asks the server to hold it while the link is on its way
   * (revision 1.6, `?hold_ms=`; default 20000 ms, at most 25000; 0 asks for none). */
  statusHoldMs?: number;
  /** The window to open the popup from and listen on (default: globalThis). */
  window?: Window;
}

/** Options of {@link Linker.link}. */
export interface LinkOptions {
  /** Called at each step. */
  onProgress?: (progress: Progress) => void;
  /** Cancels linking (`aborted`). */
  signal?: AbortSignal;
  /** Force one path (e.g. "popup" from a second click after `popup_blocked`). */
  path?: SecretPath;
}

/** A finished link. */
export interface LinkResult {
  readonly instanceId: string;
  readonly state: "linked";
  /** How the secret was obtained. */
  readonly path: SecretPath;
  /** The device's endpoint that answered: `private_ip:port` or one of its candidates
   * (revision 1.3). */
  readonly endpoint: string | null;
  readonly support: Support;
  readonly attempts: readonly Attempt[];
  /** Messages the popup listener ignored (wrong origin, window or instance, or malformed). */
  readonly ignoredMessages: number;
  /** The link's short code (revision 1.4), when the server named the account. */
  readonly shortCode?: string;
}

/** An error with a stable snake_case code; its message is in words a user understands. */
export class LanlinkError extends Error {
  constructor(code: string, extra?: { status?: number; attempts?: Attempt[] });
  readonly name: "LanlinkError";
  readonly code: string;
  readonly status: number | undefined;
  readonly attempts: Attempt[];
}

/** Words a user understands for an error code. */
export function describe(code: string): string;

/** A fresh confirmation nonce (revision 1.4): 32 lowercase hex characters. */
export function newNonce(): string;

/** The short code of a link (revision 1.4), "123 456", as a device with the `compare` policy shows it. */
export function shortCode(link: {
  instanceId: string;
  secret: string;
  displayName: string;
  nonce: string;
}): Promise<string>;
/** Plain words for a discovery's `hidden.reason` (revision 1.2), or null when nothing is hidden. */
export function hiddenWords(reason: string | null): string | null;

/** The LNA address space of an IP literal, or null when it is not private or loopback. */
export function addressSpaceOf(ip: string): "loopback" | "local" | null;

/** The most candidates a discovered agent may list (revision 1.3). */
export const MAX_CANDIDATES: number;
/** The default per-endpoint wait of {@link Linker.link}, in milliseconds (3000). */
export const DEFAULT_FETCH_TIMEOUT_MS: number;
/** How long, by default, a status request asks to be held (revision 1.6): 20000 ms. */
export const DEFAULT_STATUS_HOLD_MS: number;
/** The longest hold a request may ask for (revision 1.6): 25000 ms. */
export const MAX_HOLD_MS: number;
/** How much longer than its hold a held status request may take: 10000 ms. */
export const HELD_REQUEST_MARGIN_MS: number;
/** When to ask a link's state again, in ms from now: 0 when the state moved, else one poll
 * interval after the last request was sent (revision 1.6). */
export function nextStatusDelay(when: { sentAt: number; now: number; pollIntervalMs: number; moved: boolean }): number;
/** A socket address as the server writes it, or null. */
export function parseEndpoint(text: unknown): { ip: string; port: number } | null;
/** An endpoint as the server writes it. */
export function endpointText(endpoint: { ip: string; port: number }): string;
/** A device's endpoints in the order tried: `private_ip:port`, then its candidates, without
 * repeats, each private, link-local, ULA or loopback (others are never contacted). */
export function endpointsOf(
  agent: Pick<DiscoveredAgent, "private_ip" | "port" | "candidates">,
): { ip: string; port: number }[];

/** The exact origin of an agent's local endpoint. */
export function agentOrigin(agent: Pick<DiscoveredAgent, "private_ip" | "port">): string;

/** What this browser supports, and the path tried first for `agent`. */
export function detectSupport(
  agent?: Pick<DiscoveredAgent, "private_ip" | "port">,
  env?: { pageUrl?: string; request?: unknown; secureContext?: boolean },
): Support;

/** Whether a message event comes from the agent's popup page for `expected` (its hello, the
 * secret, or a refusal); null when ignored. */
export function acceptPopupMessage(
  event: { origin: string; source?: unknown; data: unknown },
  expected: { origin: string; instanceId: string; source?: unknown },
): { kind: "hello" } | { kind: "secret"; secret: string } | { kind: "refused"; error: string } | null;

/** The linker role in a browser. */
export class Linker {
  constructor(options?: LinkerOptions);
  /** Devices in linking mode on the caller's network (non-private addresses dropped). */
  discover(options?: { signal?: AbortSignal }): Promise<DiscoveredAgent[]>;
  /** Discovery with why devices are hidden, if they are (revision 1.2). */
  find(options?: { signal?: AbortSignal }): Promise<{ agents: DiscoveredAgent[]; hidden: "too_many_agents" | "shared_network" | string | null; message: string | null }>;
  /** A manual code for the account. */
  mintCode(options?: { signal?: AbortSignal }): Promise<ManualCode>;
  /** The state of this account's link to an instance. */
  linkState(instanceId: string, options?: { signal?: AbortSignal; holdMs?: number }): Promise<LinkState>;
  /** Obtains the secret, links, and waits for "linked". Call it from a click handler. */
  link(agent: DiscoveredAgent, options?: LinkOptions): Promise<LinkResult>;
}
