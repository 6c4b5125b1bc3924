// Small pieces every buyer view shares: the page-wide error and message areas, the signed-in
// user, and formatting. Kept apart from buyer.js so views do not import the router (no cycles).

import { ApiError, api, explain, setToken, token } from "./api.js";

/** The signed-in user from GET /me, or null. Refreshed by loadMe(). */
export const session = { me: null };

/** Listeners called after sign in / sign out, so the header can redraw. */
const sessionListeners = new Set();
export function onSessionChange(fn) {
  sessionListeners.add(fn);
}

/** Asks the server who we are; a rejected token is forgotten (it expired or was revoked). */
export async function loadMe() {
  if (!token()) {
    session.me = null;
  } else {
    try {
      session.me = await api("/me");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) setToken(null);
      session.me = null;
    }
  }
  sessionListeners.forEach((fn) => fn());
  return session.me;
}

/** "message (CODE)": explain() gives the sentence; the code stays visible for support and tests. */
export function errorText(e) {
  let text = explain(e);
  if (!(e instanceof ApiError)) return text;
  // For field errors the server's own words say what is wrong with the field; keep them.
  if (e.code === "VALIDATION" && e.message && !text.includes(e.message)) text += ` — ${e.message}`;
  return e.code && !text.includes(e.code) ? `${text} (${e.code})` : text;
}

function area(testid) {
  return document.querySelector(`[data-testid=${testid}]`);
}

/** Shows an error (an ApiError, an Error or a plain sentence) in [data-testid=error]. */
export function showError(e) {
  const node = area("error");
  if (!node) return;
  node.textContent = typeof e === "string" ? e : errorText(e);
  node.hidden = false;
}

export function clearError() {
  const node = area("error");
  if (node) {
    node.textContent = "";
    node.hidden = true;
  }
}

/** A passing notice (not an error), e.g. "a seat you chose was taken". */
let messageTimer = null;
export function showMessage(text, ms = 6000) {
  const node = area("message");
  if (!node) return;
  node.textContent = text;
  node.hidden = false;
  clearTimeout(messageTimer);
  if (ms) messageTimer = setTimeout(() => (node.hidden = true), ms);
}

export function clearMessage() {
  const node = area("message");
  if (node) node.hidden = true;
}

/** "Sat 12 Jul 2025, 19:30" in the viewer's locale and zone. */
export function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, {
    weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

/** Remembers where to come back to after signing in. */
export function signInLink() {
  const back = location.hash || "#/";
  return `#/login?back=${encodeURIComponent(back)}`;
}

/** Query parameters of the current hash route ("#/path?a=1"). */
export function hashQuery() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : location.hash.slice(i + 1));
}

/** parent.append() that skips null/false (plain append would print "null"). */
export function append(parent, ...children) {
  parent.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
