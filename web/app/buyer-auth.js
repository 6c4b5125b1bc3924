// Sign in and registration. Registration may answer 428 CAPTCHA_REQUIRED during a surge; the
// error's details name the challenge endpoint (POST → {challenge_id, difficulty}) and the answer
// goes back in the same registration body as `captcha: {challenge_id, answer}` (the page
// solves the server's proof-of-work puzzle itself).

import { ApiError, api, el, setToken } from "./api.js";
import { clearError, hashQuery, loadMe, showError, showMessage } from "./buyer-ui.js";

/** Where to go after signing in: the page that sent us here, or the program list. */
function goBack() {
  const back = hashQuery().get("back");
  location.hash = back && back.startsWith("#/") && !back.startsWith("#/login") ? back : "#/";
}

async function signIn(login, password) {
  const s = await api("/sessions", { method: "POST", body: { login, password } });
  setToken(s.token);
  await loadMe();
}

/** Disables a form's submit button while `work` runs, so one click sends one request. */
async function busy(button, work) {
  if (button.disabled) return;
  button.disabled = true;
  clearError();
  try {
    await work();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

function field(label, input) {
  return el("label", { class: "field" }, el("span", {}, label), input);
}

export function renderLogin(root) {
  const login = el("input", { id: "login-email", name: "login", type: "text", autocomplete: "username", required: true, placeholder: "email or mobile" });
  const password = el("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = el("button", { id: "login-submit", type: "submit", class: "primary" }, "Sign in");
  const form = el("form", { class: "card narrow", "aria-label": "Sign in" },
    el("h1", {}, "Sign in"),
    field("Email or mobile", login),
    field("Password", password),
    submit,
    el("p", {}, "No account yet? ", el("a", { href: `#/register${location.hash.includes("?") ? "?" + hashQuery() : ""}` }, "Register")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      await signIn(login.value.trim(), password.value);
      goBack();
    });
  });
  root.append(form);
  login.focus();
}

export function renderRegister(root) {
  const email = el("input", { id: "register-email", type: "email", autocomplete: "email" });
  const mobile = el("input", { id: "register-mobile", type: "tel", autocomplete: "tel" });
  const name = el("input", { id: "register-name", type: "text", autocomplete: "nickname", maxlength: 64 });
  const password = el("input", { id: "register-password", type: "password", autocomplete: "new-password", required: true });
  const captchaBox = el("div", { class: "captcha", hidden: true });
  const submit = el("button", { id: "register-submit", type: "submit", class: "primary" }, "Create account");
  const form = el("form", { class: "card narrow", "aria-label": "Register" },
    el("h1", {}, "Create an account"),
    el("p", { class: "hint" }, "Give an email, a mobile number, or both."),
    field("Email", email),
    field("Mobile", mobile),
    field("Display name (optional)", name),
    field("Password", password),
    captchaBox,
    submit,
    el("p", {}, "Already registered? ", el("a", { href: "#/login" }, "Sign in")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      const body = { password: password.value };
      if (email.value.trim()) body.email = email.value.trim();
      if (mobile.value.trim()) body.mobile = mobile.value.trim();
      if (name.value.trim()) body.display_name = name.value.trim();
      try {
        await api("/users", { method: "POST", body });
      } catch (e) {
        // During a registration surge the server asks for proof of work: the page solves the
        // puzzle itself (no question for the buyer) and sends the registration again.
        if (!(e instanceof ApiError && e.code === "CAPTCHA_REQUIRED")) throw e;
        body.captcha = await solveChallenge(captchaBox, e.details && e.details.challenge_url);
        await api("/users", { method: "POST", body });
      }
      await signIn(body.email || body.mobile, body.password);
      showMessage("Welcome! Your account is ready.");
      goBack();
    });
  });
  root.append(form);
  email.focus();
}

/**
 * Fetches a proof-of-work challenge and solves it: the smallest decimal nonce whose
 * SHA-256(challenge_id ":" nonce) starts with `difficulty` zero bits (about 2^difficulty
 * hashes; a fraction of a second at the default). Returns `{challenge_id, answer}`.
 */
async function solveChallenge(box, url) {
  const path = (url || "/api/v1/captcha").replace(/^\/api\/v1/, "");
  const c = await api(path, { method: "POST" });
  box.replaceChildren(el("p", { id: "captcha-status", "data-testid": "captcha-status" },
    "Many people are signing up right now; your browser is proving it is not a bot…"));
  box.hidden = false;
  const encoder = new TextEncoder();
  for (let nonce = 0; ; nonce++) {
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(`${c.challenge_id}:${nonce}`)));
    if (leadingZeroBits(hash) >= c.difficulty) {
      box.hidden = true;
      return { challenge_id: c.challenge_id, answer: String(nonce) };
    }
  }
}

function leadingZeroBits(bytes) {
  let bits = 0;
  for (const b of bytes) {
    if (b === 0) { bits += 8; continue; }
    return bits + Math.clz32(b) - 24;
  }
  return bits;
}
