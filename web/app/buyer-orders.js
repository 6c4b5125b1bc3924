// Orders: one order (#/orders/NO) with countdown, pay, cancel and live status; and the list of
// the buyer's orders (#/orders). Status changes arrive on /ws/me (e.g. paid in the provider's
// tab); REST is re-read on those events, on returning to the tab and on a slow poll, so a
// missed socket frame only delays the page, never leaves it wrong.

import { ApiError, api, el, money, token, wsUrl } from "./api.js";
import { clearError, session, showError, showMessage, signInLink, when } from "./buyer-ui.js";

const POLL_MS = 10000;

/** /ws/me with reconnects. `onEvent(frame)` gets every frame; stop() ends it. */
class BuyerSocket {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.stopped = false;
    this.retryMs = 1000;
    this.connect();
  }

  connect() {
    if (this.stopped || !token()) return;
    const ws = new WebSocket(wsUrl("/ws/me", true));
    this.ws = ws;
    ws.onopen = () => (this.retryMs = 1000);
    ws.onmessage = (ev) => {
      try {
        this.onEvent(JSON.parse(ev.data));
      } catch (e) {
        console.warn("bad /ws/me frame", e);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.stopped) return;
      // Reconnecting may have missed events: the owner re-reads over REST.
      this.onEvent({ type: "resync", reason: "reconnect" });
      this.timer = setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 15000);
    };
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}

function needSignIn(root) {
  root.append(el("p", { class: "card narrow" }, el("a", { href: signInLink() }, "Sign in"), " to see your orders."));
}

/** "mm:ss" until `iso`, never negative. */
function mmss(iso) {
  const left = Math.max(0, Math.floor((new Date(iso) - Date.now()) / 1000));
  return `${String(Math.floor(left / 60)).padStart(2, "0")}:${String(left % 60).padStart(2, "0")}`;
}

// ---- one order ---------------------------------------------------------------------------------

export async function renderOrder(root, [orderNo], stale) {
  if (!session.me) return needSignIn(root);
  const order = await api(`/orders/${orderNo}`);
  if (stale()) return;
  const view = new OrderView(root, order);
  return () => view.destroy();
}

class OrderView {
  constructor(root, order) {
    this.order = order;
    this.statusNode = el("strong", { "data-testid": "order-status", class: "status" });
    this.countdownNode = el("span", { "data-testid": "countdown", class: "countdown", role: "timer" });
    this.countdownBox = el("p", { class: "countdown-box" }, "Time left to pay: ", this.countdownNode);
    this.payLinkBox = el("p", { class: "hint", hidden: true });
    this.payButton = button("pay", "Pay now", "primary big", () => this.pay());
    this.checkButton = button("pay-check", "I have paid — check", "", () => this.payCheck());
    this.cancelButton = button("cancel", "Cancel order", "danger", () => this.cancel());
    this.refundButton = button("refund", "Refund", "", () => this.refund());
    this.programNode = el("p", { class: "meta" });
    this.ticketsNode = el("ul", { class: "tickets" });
    root.append(
      el("p", {}, el("a", { href: "#/orders" }, "← My orders")),
      el("h1", {}, "Order ", el("span", { "data-testid": "order-no" }, order.order_no)),
      this.programNode,
      el("section", { class: "card order-card" },
        el("p", { class: "status-line" }, "Status: ", this.statusNode),
        this.countdownBox,
        el("p", {}, "Total: ", el("strong", { "data-testid": "order-total" }, money(order.total_cents))),
        this.ticketsNode,
        el("div", { class: "actions" }, this.payButton, this.checkButton, this.cancelButton, this.refundButton),
        this.payLinkBox),
    );
    this.draw();
    this.loadProgramName();
    this.socket = new BuyerSocket((f) => this.onEvent(f));
    this.tick = setInterval(() => this.drawCountdown(), 1000);
    this.poll = setInterval(() => this.isPending() && this.reload(), POLL_MS);
    this.onVisible = () => document.visibilityState === "visible" && this.reload();
    document.addEventListener("visibilitychange", this.onVisible);
    window.addEventListener("focus", this.onVisible);
  }

  destroy() {
    this.socket.stop();
    clearInterval(this.tick);
    clearInterval(this.poll);
    document.removeEventListener("visibilitychange", this.onVisible);
    window.removeEventListener("focus", this.onVisible);
  }

  isPending() {
    return this.order.status === "pending_payment";
  }

  draw() {
    const o = this.order;
    this.statusNode.textContent = o.status; // exactly the API's value
    this.statusNode.dataset.status = o.status;
    this.payButton.hidden = this.checkButton.hidden = this.cancelButton.hidden = !this.isPending();
    this.refundButton.hidden = o.status !== "paid";
    if (!this.isPending()) this.payLinkBox.hidden = true;
    const tier = (id) => (this.tierNames && this.tierNames.get(id) ? `${this.tierNames.get(id)}: ` : "");
    this.ticketsNode.replaceChildren(...(o.tickets || []).map((t) => el("li", { "data-testid": "order-ticket" },
      tier(t.ticket_category_id),
      t.seat ? `row ${t.seat.row} seat ${t.seat.col}` : "general admission",
      ` — ${money(t.price_cents)}`)));
    this.drawCountdown();
  }

  drawCountdown() {
    this.countdownBox.hidden = !this.isPending();
    if (!this.isPending()) return;
    const text = mmss(this.order.expires_at);
    this.countdownNode.textContent = text;
    // At zero the server expires the order; ask it once rather than guessing the status here.
    if (text === "00:00" && !this.expiryChecked) {
      this.expiryChecked = true;
      setTimeout(() => this.reload(), 1500);
    }
  }

  async loadProgramName() {
    try {
      const p = await api(`/programs/${this.order.program_id}`);
      const show = (p.show_times || []).find((s) => s.id === this.order.show_time_id);
      this.tierNames = new Map((p.ticket_categories || []).map((c) => [c.id, c.name]));
      this.draw();
      this.programNode.replaceChildren(el("a", { href: `#/programs/${p.id}` }, p.title),
        show ? ` · ${when(show.starts_at)}` : "");
    } catch {
      // The program name is decoration; the order itself is what matters here.
    }
  }

  onEvent(frame) {
    if (frame.type === "order" && frame.order_no === this.order.order_no) {
      this.order.status = frame.status; // show it at once, then fetch the full order
      this.draw();
      this.reload();
    } else if (frame.type === "resync") {
      this.reload();
    }
  }

  async reload() {
    try {
      this.order = await api(`/orders/${this.order.order_no}`);
      this.draw();
    } catch (e) {
      if (!(e instanceof ApiError) || e.code !== "NETWORK") showError(e);
    }
  }

  /** Runs an action with its button disabled, so a double click sends it once. */
  async act(btn, work) {
    if (btn.disabled) return;
    btn.disabled = true;
    clearError();
    try {
      await work();
    } catch (e) {
      showError(e);
      this.reload();
    } finally {
      btn.disabled = false;
    }
  }

  pay() {
    return this.act(this.payButton, async () => {
      const p = await api(`/orders/${this.order.order_no}/payments`, { method: "POST", body: { channel: "mockpay" } });
      // Opened right after the click's request, still within the click's user activation.
      const win = window.open(p.pay_url, "_blank");
      this.payLinkBox.replaceChildren(win ? "The checkout opened in a new tab. " : "Your browser blocked the new tab. ",
        el("a", { href: p.pay_url, target: "_blank", rel: "noopener", "data-testid": "pay-link" }, "Open the checkout page"));
      this.payLinkBox.hidden = false;
    });
  }

  payCheck() {
    return this.act(this.checkButton, async () => {
      this.order = await api(`/orders/${this.order.order_no}/pay-check`, { method: "POST" });
      this.draw();
      if (this.isPending()) showMessage("No payment has arrived yet.");
    });
  }

  cancel() {
    // No confirm(): a modal would block automated checkouts and keyboard flow; the button says it.
    return this.act(this.cancelButton, async () => {
      this.order = await api(`/orders/${this.order.order_no}/cancel`, { method: "POST" });
      this.draw();
    });
  }

  refund() {
    return this.act(this.refundButton, async () => {
      this.order = await api(`/orders/${this.order.order_no}/refund`, { method: "POST" });
      this.draw();
    });
  }
}

function button(testid, text, cls, onclick) {
  return el("button", { type: "button", id: testid, "data-testid": testid, class: cls, onclick }, text);
}

// ---- my orders ---------------------------------------------------------------------------------

export async function renderMyOrders(root, _params, stale) {
  if (!session.me) return needSignIn(root);
  const list = el("ul", { class: "order-list", "data-testid": "order-list" });
  root.append(el("h1", {}, "My orders"), list);
  const load = async () => {
    const { items } = await api("/orders?per_page=50");
    if (stale()) return;
    list.replaceChildren(...items.map(orderRow));
    if (!items.length) list.append(el("li", { class: "empty" }, "No orders yet. ", el("a", { href: "#/" }, "Find a show")));
  };
  await load();
  // Any order event may change a row: re-read the list (small) rather than patching it.
  const socket = new BuyerSocket((f) => (f.type === "order" || f.type === "resync") && load().catch(() => {}));
  return () => socket.stop();
}

function orderRow(o) {
  return el("li", { "data-testid": "order-row", "data-order-no": o.order_no },
    el("a", { href: `#/orders/${o.order_no}` },
      el("span", { class: "order-no" }, `#${o.order_no}`),
      el("span", { class: "status", "data-status": o.status }, o.status),
      el("span", {}, money(o.total_cents)),
      el("span", { class: "meta" }, when(o.created_at))));
}
