// The linking page's controller: wires lanlink.js to the page (web/link.html).
//
// Sign-in for the demo: the account token typed into the form is held in this module's memory
// (a Linker instance) for the page's lifetime only: never stored, never in a URL, never logged.
// A real service would rely on its own session cookie instead (`new Linker()` sends same-origin
// cookies), authenticated by its own `Authenticator` on the server.

import { Linker, LanlinkError, describe, detectSupport, endpointText } from "./lanlink.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const prefix = document.querySelector('meta[name="lanlink-prefix"]')?.getAttribute("content") || undefined;
/** `?path=popup` (or `fetch`, `fetch-lna`) forces one way of reaching the device, for support. */
const forcedPath = (() => {
  const path = new URLSearchParams(location.search).get("path");
  return path === "popup" || path === "fetch" || path === "fetch-lna" ? path : undefined;
})();

/** @type {Linker | null} */
let linker = null;
/** @type {import("./lanlink.d.ts").DiscoveredAgent[]} */
let devices = [];
let busy = false;

/**
 * Marks the page's state (for people: the text; for tests: `data-state` on the body).
 * @param {string} state
 */
function setState(state) {
  document.body.dataset.state = state;
}

/** @param {string} text */
function showStatus(text, linked = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("linked", linked);
}

/**
 * Shows the link's short code (protocol revision 1.4) for the user to compare with the device's.
 * @param {string} code
 */
function showShortCode(code) {
  $("short-code").textContent = code;
  $("short-code-box").hidden = false;
  document.body.dataset.shortCode = code;
}

/** @param {string | null} text */
function showError(text) {
  const error = $("error");
  error.hidden = !text;
  error.textContent = text || "";
}

/** @param {boolean} value */
function setBusy(value) {
  busy = value;
  for (const button of document.querySelectorAll("button")) {
    if (button.id !== "retry-popup") /** @type {HTMLButtonElement} */ (button).disabled = value;
  }
}

/** Words for where the key came from. */
const PATH_WORDS = {
  "fetch-lna": "directly over your local network (Local Network Access)",
  fetch: "directly over your local network",
  popup: "through a small window opened from the device",
};

/** @param {import("./lanlink.d.ts").DiscoveredAgent} device */
function deviceName(device) {
  return device.info.hostname || device.info.model || "Unnamed device";
}

/** @param {string | null} [hidden] why the server hides devices, in words */
function renderDevices(hidden = null) {
  const list = $("devices");
  list.replaceChildren();
  if (devices.length === 0) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = hidden
      ? `${hidden} Get a code below and type it on the device.`
      : "No device in linking mode was found on your network. Check that it is on and in linking mode, then search again, or use a code below.";
    list.append(li);
    return;
  }
  for (const device of devices) {
    const li = document.createElement("li");
    li.dataset.instanceId = device.instance_id;
    const text = document.createElement("div");
    const name = document.createElement("div");
    name.className = "device-name";
    name.textContent = deviceName(device);
    const meta = document.createElement("div");
    meta.className = "device-meta";
    const parts = [device.info.model, device.info.agent && `${device.info.agent} ${device.info.agent_version}`.trim(),
      `${device.private_ip}:${device.port}`].filter(Boolean);
    meta.textContent = parts.join(" · ");
    text.append(name, meta);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button";
    button.textContent = "Link";
    button.addEventListener("click", () => startLink(device));
    li.append(text, button);
    list.append(li);
  }
}

/**
 * Links a device; the popup fallback runs inside this click.
 * @param {import("./lanlink.d.ts").DiscoveredAgent} device
 * @param {import("./lanlink.d.ts").SecretPath} [path]
 */
async function startLink(device, path) {
  if (!linker || busy) return;
  $("short-code-box").hidden = true;
  setBusy(true);
  showError(null);
  $("retry-popup").hidden = true;
  setState("linking");
  try {
    const result = await linker.link(device, {
      path: path || forcedPath,
      onProgress: (progress) => {
        showStatus(progress.message);
        if (progress.shortCode) showShortCode(progress.shortCode);
      },
    });
    const fellBack = result.attempts.length > 1
      ? " Your browser did not let this page reach the device directly, so the device's window was used."
      : "";
    // Revision 1.3: say so when the device answered at another of its addresses.
    const first = endpointText({ ip: device.private_ip, port: device.port });
    const elsewhere = result.endpoint && result.endpoint !== first
      ? ` The device answered at ${result.endpoint}, not at ${first}.`
      : "";
    showStatus(`✓ ${deviceName(device)} is linked to your account. The key came ${PATH_WORDS[result.path]}.${fellBack}${elsewhere}`, true);
    const row = document.querySelector(`li[data-instance-id="${CSS.escape(device.instance_id)}"]`);
    const button = row?.querySelector("button");
    if (button) {
      const done = document.createElement("span");
      done.className = "linked-badge";
      done.textContent = "✓ Linked";
      button.replaceWith(done);
    }
    document.body.dataset.path = result.path;
    document.body.dataset.endpoint = result.endpoint || "";
    document.body.dataset.attempts = result.attempts.map((a) => `${a.path}:${a.outcome}`).join(",");
    document.body.dataset.ignored = String(result.ignoredMessages);
    setState("linked");
  } catch (err) {
    const code = err instanceof LanlinkError ? err.code : "network";
    showStatus("Linking did not finish.");
    showError(err instanceof LanlinkError ? err.message : describe("network"));
    document.body.dataset.error = code;
    if (code === "popup_blocked" || code === "popup_closed" || code === "secret_unavailable") {
      const retry = $("retry-popup");
      retry.hidden = false;
      retry.onclick = () => startLink(device, "popup");
    }
    setState("error");
  } finally {
    setBusy(false);
  }
}

async function findDevices(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const token = /** @type {HTMLInputElement} */ ($("token")).value.trim();
  linker = new Linker({ token, prefix });
  setBusy(true);
  showError(null);
  showStatus("Looking for devices on your network…");
  try {
    const found = await linker.find();
    devices = found.agents;
    renderDevices(found.message);
    if (found.hidden) {
      // Devices are hidden on this network (revision 1.2): say why, and offer the code.
      showStatus(found.message || "No device is shown on your network: use a code.");
      document.body.dataset.hidden = found.hidden;
      setState("hidden");
    } else {
      showStatus(devices.length ? "Pick a device and click Link." : "No device found.");
      setState(devices.length ? "listed" : "none");
    }
  } catch (err) {
    showStatus("Could not search for devices.");
    showError(err instanceof LanlinkError ? err.message : describe("network"));
    setState("error");
  } finally {
    setBusy(false);
  }
}

async function getCode() {
  if (!linker) {
    const token = /** @type {HTMLInputElement} */ ($("token")).value.trim();
    linker = new Linker({ token, prefix });
  }
  setBusy(true);
  showError(null);
  try {
    const { code, expiresAt } = await linker.mintCode();
    $("code").textContent = code;
    $("code").dataset.code = code;
    $("code-expiry").textContent = `Valid once, until ${expiresAt.toLocaleTimeString()}. The device links by itself once you have typed it.`;
    $("code-box").hidden = false;
    showStatus("Type the code on your device.");
    setState("code");
  } catch (err) {
    showError(err instanceof LanlinkError ? err.message : describe("network"));
    setState("error");
  } finally {
    setBusy(false);
  }
}

$("account-form").addEventListener("submit", findDevices);
$("get-code").addEventListener("click", getCode);
$("support").textContent = detectSupport().reason;
setState("idle");
