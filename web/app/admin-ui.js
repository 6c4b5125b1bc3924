// Small building blocks shared by the console's sections: the admin-aware api() wrapper,
// a lifetime "scope" for timers and sockets, toasts, tables, filters and pagers.

import { api, ApiError, explain, el } from "./api.js";

// ---- api with the console's reaction to auth errors ----

const authHandlers = { forbidden: () => {}, signedOut: () => {} };

/** Sets what happens when any admin call answers 403 (not an operator) or 401 (token gone). */
export function onAuthProblem({ forbidden, signedOut }) {
  authHandlers.forbidden = forbidden;
  authHandlers.signedOut = signedOut;
}

/**
 * api() for the console. A 403 or 401 from any call switches the whole page (to the
 * "operators only" notice or the sign-in form) instead of leaving a half-drawn section,
 * then rethrows so the caller stops.
 */
export async function adminApi(path, options) {
  try {
    return await api(path, options);
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) authHandlers.forbidden();
    else if (e instanceof ApiError && e.status === 401) authHandlers.signedOut();
    throw e;
  }
}

/** True for the errors adminApi() already handled by switching the page. */
export function handledByPage(e) {
  return e instanceof ApiError && (e.status === 401 || e.status === 403);
}

// ---- lifetimes ----

/**
 * What a view started (timers, sockets) and must stop when the route changes. Async work
 * checks `closed` before drawing, so a late answer never paints over the next page.
 */
export class Scope {
  constructor() {
    this.closed = false;
    this.cleanups = [];
  }
  /** Runs fn when the scope closes. */
  add(fn) {
    this.cleanups.push(fn);
  }
  /**
   * Calls fn now and then `ms` after each run finishes (a chain of timeouts, not an interval:
   * a slow server never gets overlapping requests).
   */
  every(ms, fn) {
    let timer = null;
    const tick = async () => {
      try {
        await fn();
      } finally {
        if (!this.closed) timer = setTimeout(tick, ms);
      }
    };
    this.add(() => clearTimeout(timer));
    tick();
  }
  close() {
    this.closed = true;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
  }
}

// ---- toasts ----

/** A short message in the corner (also read out: the region is aria-live). */
export function toast(text, kind = "info", ms = 5000) {
  const region = document.getElementById("toasts");
  if (!region) return;
  const node = el("div", { class: `toast toast-${kind}`, "data-testid": "toast" }, text);
  region.append(node);
  setTimeout(() => node.remove(), ms);
  // Keep the corner readable during an alert storm.
  while (region.children.length > 4) region.firstElementChild.remove();
}

// ---- formatting ----

/** "2026-11-23 14:05:09" in local time, or "—". */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A figure with at most `digits` decimals; null/undefined as "—". */
export function fmtNum(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** "available / held / sold", or "—" when the store has no counts. */
export function fmtCounts(c) {
  return c ? `${c.available} / ${c.held} / ${c.sold}` : "—";
}

// ---- building blocks ----

/** A titled section; `tools` go to the right of the heading (buttons, filters). */
export function section(title, testid, tools = []) {
  const body = el("div", { class: "section-body" });
  const node = el(
    "section",
    { class: "panel", "data-testid": testid, "aria-label": title },
    el("div", { class: "panel-head" }, el("h2", {}, title), el("div", { class: "panel-tools" }, tools)),
    body,
  );
  return { node, body };
}

/**
 * explain(), plus the server's own words for a validation error: "not valid (title)" alone
 * does not tell an operator what to change, "title: must not be empty" does.
 */
export function explainFully(e) {
  const text = explain(e);
  if (e instanceof ApiError && e.code === "VALIDATION" && e.message && !text.includes(e.message)) {
    // The server's message already names the field ("title: must not be empty").
    return `${text.replace(/ \([^)]*\)$/, "")} ${e.message}`;
  }
  return text;
}

/** A line that shows an error (via explainFully()) or nothing. */
export function errorLine() {
  const node = el("p", { class: "error", role: "alert", hidden: true });
  return {
    node,
    show(e) {
      node.textContent = explainFully(e);
      node.hidden = false;
    },
    clear() {
      node.textContent = "";
      node.hidden = true;
    },
  };
}

/** A table inside a horizontally scrolling box (narrow screens keep every column). */
export function table(headers, rows, caption) {
  return el(
    "div",
    { class: "table-scroll", tabindex: "0", role: "region", "aria-label": caption || "table" },
    el(
      "table",
      {},
      caption ? el("caption", { class: "sr-only" }, caption) : null,
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ),
  );
}

/** A labelled <select>; onChange gets the new value. */
export function selectFilter(id, label, options, value, onChange) {
  const select = el(
    "select",
    { id, onchange: (e) => onChange(e.target.value) },
    options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)),
  );
  return el("label", { class: "filter", for: id }, `${label} `, select);
}

/** "‹ Prev · page 2 of 5 (93) · Next ›" for an {items,total,page,per_page} answer. */
export function pager(prefix, listing, goTo) {
  const pages = Math.max(1, Math.ceil(listing.total / listing.per_page));
  return el(
    "div",
    { class: "pager", "data-testid": `${prefix}-pager` },
    el(
      "button",
      { type: "button", "data-testid": `${prefix}-prev`, disabled: listing.page <= 1, onclick: () => goTo(listing.page - 1) },
      "‹ Prev",
    ),
    el("span", {}, `page ${listing.page} of ${pages} (${listing.total})`),
    el(
      "button",
      { type: "button", "data-testid": `${prefix}-next`, disabled: listing.page >= pages, onclick: () => goTo(listing.page + 1) },
      "Next ›",
    ),
  );
}

/** A status word as a coloured badge (colour by meaning, see admin.css). */
export function badge(text) {
  return el("span", { class: `badge badge-${String(text || "none").replace(/[^a-z_]/gi, "")}` }, text || "—");
}

/** A button that disables itself while its async action runs (no double posts). */
export function actionButton(label, action, attrs = {}) {
  const button = el("button", {
    type: "button",
    ...attrs,
    onclick: async () => {
      button.disabled = true;
      try {
        await action();
      } finally {
        if (button.isConnected) button.disabled = false;
      }
    },
  }, label);
  return button;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A category's name for people: "Floor (#12)", or "#12" when the program detail did not say. */
export function categoryLabel(ctx, id) {
  const name = ctx.categoryNames.get(id);
  return name ? `${name} (#${id})` : `#${id}`;
}

/**
 * For a list that reloads on filters, refresh buttons and actions: each call of the returned
 * function starts a request and answers a check "is this still the newest request?", so an
 * older, slower answer never overwrites the list the operator asked for last.
 */
export function newestOnly() {
  let counter = 0;
  return () => {
    const mine = ++counter;
    return () => mine === counter;
  };
}
