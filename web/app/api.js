// The public API and WebSockets of API.md, for both pages. No dependencies.
//
// Errors: every 4xx/5xx body is {error: {code, message, details}}; api() throws an ApiError
// carrying them, and explain() turns a code into a sentence for people.

const TOKEN_KEY = "boxoffice.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

/** fetch() of /api/v1 + path with the token and JSON; resolves to the body, throws ApiError. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const h = { ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const t = token();
  if (t) h["Authorization"] = `Bearer ${t}`;
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "NETWORK", "The server cannot be reached. Check your connection.");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  const json = text ? safeJson(text) : null;
  if (!response.ok) {
    const e = (json && json.error) || {};
    throw new ApiError(response.status, e.code || `HTTP_${response.status}`, e.message || text, e.details);
  }
  return json;
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** A WebSocket URL on this server for `path` (e.g. "/ws/me"), with the token if asked. */
export function wsUrl(path, withToken = false) {
  const base = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
  return withToken && token() ? `${base}?token=${encodeURIComponent(token())}` : base;
}

/** A fresh Idempotency-Key. */
export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

const MESSAGES = {
  SEAT_UNAVAILABLE: "Someone else just took one of those seats. Pick other seats.",
  SOLD_OUT: "Not enough tickets left in this tier.",
  LIMIT_EXCEEDED: "That is more tickets than this program allows per order or per account.",
  PRICE_MISMATCH: "Prices changed while you were choosing. Reload the seat map.",
  VALIDATION: "Some of what you entered is not valid.",
  UNAUTHENTICATED: "Please sign in first.",
  FORBIDDEN: "You are not allowed to do that.",
  NOT_FOUND: "Not found.",
  RATE_LIMITED: "Too many requests; wait a moment and try again.",
  IN_FLIGHT: "That order is still being placed; wait a moment.",
  CAPTCHA_REQUIRED: "Please solve the captcha to continue.",
  NETWORK: "The server cannot be reached. Check your connection.",
  BUYER_HAS_TICKET: "One of the ticket buyers already has a ticket for this program.",
  DUPLICATE: "An account with that email or mobile already exists.",
  IDEMPOTENCY_KEY_REUSED: "This request was already sent with different contents.",
  INVALID_STATE: "The order is no longer in a state that allows this.",
  INVENTORY_UNAVAILABLE: "Seats cannot be reserved right now; try again in a moment.",
  NOT_CANCELLABLE: "This order can no longer be cancelled.",
  NOT_ON_SALE: "This program is not on sale.",
  NOT_PAYABLE: "This order can no longer be paid (it expired or was cancelled).",
  NOT_REFUNDABLE: "This order cannot be refunded.",
  ORDER_BUSY: "The order is being changed; try again in a moment.",
  OVERLOADED: "The sale is very busy; try again in a few seconds.",
  PAYMENT_PROVIDER_UNAVAILABLE: "The payment provider is unavailable; try again shortly.",
  SHOW_STARTED: "The show has already started.",
  STORE_UNAVAILABLE: "The service is briefly unavailable; try again shortly.",
  TOO_MANY_ATTEMPTS: "Too many attempts; wait a little before trying again.",
  TOO_MANY_CONNECTIONS: "Too many open connections; close other tabs.",
  INTERNAL: "Something went wrong on our side.",
};

/** A sentence for people: the known meaning of the code, plus the server's own words. */
export function explain(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const known = MESSAGES[error.code];
  const field = error.details && error.details.field ? ` (${error.details.field})` : "";
  if (known) return `${known}${field}`;
  return `${error.message || "Something went wrong"} [${error.code}]`;
}

/** Minor units to "1,234.00". */
export function money(cents) {
  return (Number(cents) / 100).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/** document.createElement with attributes and children, for pages without a framework. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
