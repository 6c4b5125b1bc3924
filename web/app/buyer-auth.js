// Sign in and registration. Registration may answer 428 CAPTCHA_REQUIRED during a surge; the
// error's details name the challenge endpoint (POST → {challenge_id, question}) and the answer
// goes back in the same registration body as `captcha: {challenge_id, answer}`.

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
  let challenge = null; // {challenge_id, question, input} once the server asked for one

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      const body = { password: password.value };
      if (email.value.trim()) body.email = email.value.trim();
      if (mobile.value.trim()) body.mobile = mobile.value.trim();
      if (name.value.trim()) body.display_name = name.value.trim();
      if (challenge) body.captcha = { challenge_id: challenge.challenge_id, answer: challenge.input.value.trim() };
      try {
        await api("/users", { method: "POST", body });
      } catch (e) {
        // A wrong captcha answer is single-use on the server: fetch a fresh challenge either way.
        const captchaProblem = e instanceof ApiError &&
          (e.code === "CAPTCHA_REQUIRED" || (challenge && e.details && e.details.field === "captcha"));
        if (captchaProblem) challenge = await showCaptcha(captchaBox, e.details && e.details.challenge_url);
        throw e;
      }
      await signIn(body.email || body.mobile, body.password);
      showMessage("Welcome! Your account is ready.");
      goBack();
    });
  });
  root.append(form);
  email.focus();
}

/** Fetches a challenge and shows its question with an answer box; returns the challenge. */
async function showCaptcha(box, url) {
  const path = (url || "/api/v1/captcha").replace(/^\/api\/v1/, "");
  const c = await api(path, { method: "POST" });
  const input = el("input", { id: "captcha-answer", type: "text", inputmode: "numeric", required: true, autocomplete: "off" });
  box.replaceChildren(
    el("p", { id: "captcha-question", "data-testid": "captcha-question" }, c.question),
    field("Your answer", input),
  );
  box.hidden = false;
  input.focus();
  return { ...c, input };
}
