// The buyer page: header, hash router and view lifecycle. Each view is a function
// (root, params) → optional cleanup; the cleanup closes its sockets and timers when the
// route changes, so leaving a program page never leaves a seat-map socket behind.

import { api, setToken } from "./api.js";
import { clearError, clearMessage, loadMe, onSessionChange, session, showError } from "./buyer-ui.js";
import { renderLogin, renderRegister } from "./buyer-auth.js";
import { renderProgramList } from "./buyer-programs.js";
import { renderProgram } from "./buyer-program.js";
import { renderMyOrders, renderOrder } from "./buyer-orders.js";

/** Routes in match order: pattern → view. Captured groups become params. */
const ROUTES = [
  [/^\/$/, renderProgramList],
  [/^\/programs\/(\d+)$/, renderProgram],
  [/^\/orders$/, renderMyOrders],
  [/^\/orders\/(\d+)$/, renderOrder],
  [/^\/login$/, renderLogin],
  [/^\/register$/, renderRegister],
];

let cleanup = null;
/** Bumped per navigation: a slow view that finishes after the user moved on must not draw. */
let generation = 0;

function currentPath() {
  const raw = location.hash.replace(/^#/, "") || "/";
  return raw.split("?")[0] || "/";
}

async function route() {
  if (typeof cleanup === "function") {
    try {
      cleanup();
    } catch (e) {
      console.warn("view cleanup failed", e);
    }
  }
  cleanup = null;
  clearError();
  clearMessage();
  const mine = ++generation;
  const root = document.getElementById("app");
  root.replaceChildren();
  const path = currentPath();
  const match = ROUTES.map(([re, view]) => [path.match(re), view]).find(([m]) => m);
  if (!match) {
    root.textContent = "Page not found.";
    return;
  }
  const [m, view] = match;
  try {
    const done = await view(root, m.slice(1), () => mine !== generation);
    if (mine === generation) cleanup = done;
    else if (typeof done === "function") done();
  } catch (e) {
    if (mine === generation) showError(e);
  }
}

function drawHeader() {
  const me = session.me;
  for (const node of document.querySelectorAll("[data-auth]")) {
    node.hidden = (node.dataset.auth === "in") !== Boolean(me);
  }
  const who = document.querySelector("[data-testid=whoami]");
  who.textContent = me ? me.display_name || me.email_masked || me.mobile_masked || `user ${me.user_id}` : "";
}

async function signOut() {
  try {
    await api("/sessions/current", { method: "DELETE" });
  } catch {
    // Signing out locally is what matters; a token the server already forgot is fine.
  }
  setToken(null);
  await loadMe();
  if (location.hash === "#/" || location.hash === "") route();
  else location.hash = "#/";
}

async function start() {
  onSessionChange(drawHeader);
  document.getElementById("logout").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  await loadMe();
  route();
}

start();
