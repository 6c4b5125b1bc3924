// Operations console entry: who is signed in, and which page the hash names.
//   #/             program list + "create program"   (admin-programs.js)
//   #/programs/ID  one program's inventory, live figures, orders, MQ, findings (admin-program.js)

import { api, ApiError, explain, token, setToken, el } from "./api.js";
import { Scope, onAuthProblem } from "./admin-ui.js";
import { renderProgramList } from "./admin-programs.js";
import { renderProgram } from "./admin-program.js";

const app = document.getElementById("app");
const sessionBox = document.getElementById("session");

/** The current page's timers and sockets; closed on every route change. */
let scope = new Scope();
/** The signed-in admin (GET /me), or null. */
let me = null;

function replaceScope() {
  scope.close();
  scope = new Scope();
  return scope;
}

// ---- who is signed in ----

/** Decides between the sign-in form, the operators-only notice and the console. */
async function boot() {
  replaceScope();
  me = null;
  if (!token()) return showSignIn();
  let profile;
  try {
    profile = await api("/me");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setToken(null); // expired or revoked: ask again
      return showSignIn();
    }
    app.replaceChildren(el("p", { class: "error", role: "alert" }, explain(e)), retryButton());
    return;
  }
  if (!(profile.roles || []).includes("admin")) return showForbidden(profile);
  me = profile;
  drawSession();
  route();
}

function retryButton() {
  return el("button", { type: "button", onclick: boot }, "Try again");
}

function showSignIn(message) {
  replaceScope();
  me = null;
  sessionBox.replaceChildren();
  const error = el("p", { class: "error", role: "alert", hidden: !message }, message || "");
  const form = el(
    "form",
    { class: "signin panel", "data-testid": "signin", onsubmit: (e) => signIn(e, form, error) },
    el("h1", {}, "Operations console"),
    el("p", { class: "muted" }, "Sign in with an operator account."),
    el("label", { for: "login-email" }, "Email or mobile"),
    el("input", { id: "login-email", name: "login", type: "text", autocomplete: "username", required: true }),
    el("label", { for: "login-password" }, "Password"),
    el("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    error,
    el("button", { id: "login-submit", type: "submit", class: "primary" }, "Sign in"),
  );
  app.replaceChildren(form);
  form.querySelector("#login-email").focus();
}

async function signIn(event, form, error) {
  event.preventDefault();
  const button = form.querySelector("#login-submit");
  button.disabled = true;
  error.hidden = true;
  try {
    const answer = await api("/sessions", {
      method: "POST",
      body: { login: form.login.value.trim(), password: form.password.value },
    });
    setToken(answer.token);
    await boot();
  } catch (e) {
    // 401 here means wrong credentials, not "sign in first".
    error.textContent = e instanceof ApiError && e.status === 401 ? "Wrong email/mobile or password." : explain(e);
    error.hidden = false;
    button.disabled = false;
  }
}

/** A signed-in buyer: no data at all, only the notice and a way out. */
function showForbidden(profile) {
  replaceScope();
  me = null;
  drawSession(profile);
  app.replaceChildren(
    el(
      "div",
      { class: "panel forbidden", "data-testid": "forbidden", role: "alert" },
      el("h1", {}, "This console is for operators."),
      el("p", {}, "Your account has no operator role. Sign out and sign in with an operator account."),
    ),
  );
}

function drawSession(profile = me) {
  const who = profile ? profile.display_name || profile.email_masked || profile.mobile_masked || `user ${profile.user_id}` : "";
  sessionBox.replaceChildren(
    el("span", { class: "who", "data-testid": "who" }, who),
    el("button", { type: "button", id: "signout", "data-testid": "signout", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  try {
    await api("/sessions/current", { method: "DELETE" });
  } catch {
    // The token is dropped locally either way.
  }
  setToken(null);
  showSignIn();
}

// Any admin call that answers 403/401 switches the page (the API is the authority on roles).
onAuthProblem({
  forbidden: () => showForbidden(me),
  signedOut: () => {
    setToken(null);
    showSignIn("Your session ended; please sign in again.");
  },
});

// ---- routes ----

function route() {
  if (!me) return; // sign-in or forbidden page stays until boot() says otherwise
  const s = replaceScope();
  const path = location.hash.replace(/^#/, "") || "/";
  const program = path.match(/^\/programs\/(\d+)\/?$/);
  if (program) renderProgram(app, s, Number(program[1]));
  else if (path === "/") renderProgramList(app, s);
  else app.replaceChildren(el("p", {}, "No such page. ", el("a", { href: "#/" }, "Back to programs")));
  // Move focus to the new page so keyboard and screen-reader users start at its top.
  app.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", route);
boot();
