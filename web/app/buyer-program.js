// The program page (#/programs/ID[?show=SHOW_TIME_ID]): tiers, the live seat map, ticket
// buyers and placing the order.
//
// What is being ordered is ONE of: the seats picked on the map, or a quantity from one tier
// (general admission, or "best available × N" in a seated tier). The API takes one or the
// other per order, so picking a seat clears the quantities and typing a quantity clears the
// seats — the page never holds an intent it cannot send.

import { ApiError, api, el, money, newKey, wsUrl } from "./api.js";
import { PALETTE, SeatFeed, SeatMap } from "./buyer-seatmap.js";
import { ticketBuyersSection } from "./buyer-ticket-buyers.js";
import { append, clearError, hashQuery, loadMe, session, showError, showMessage, signInLink, when } from "./buyer-ui.js";

export async function renderProgram(root, [idText], stale) {
  const detail = await api(`/programs/${idText}`);
  if (stale()) return;
  const page = new ProgramPage(root, detail);
  await page.start();
  return () => page.destroy();
}

class ProgramPage {
  constructor(root, detail) {
    this.root = root;
    this.d = detail;
    const wanted = Number(hashQuery().get("show"));
    this.showTimeId = (detail.show_times.find((s) => s.id === wanted) || detail.show_times[0] || {}).id;
    this.quantities = new Map(); // tier id → tickets wanted (GA or best available)
    this.map = null;
    this.buyers = null;
    this.pending = null; // {key, bodyText}: the Idempotency-Key of the order being attempted
    this.inFlight = false;
    // Colour per tier, stable across show times: tiers are matched by position in their show time.
    this.colors = new Map();
  }

  tiers() {
    return this.d.ticket_categories.filter((c) => c.show_time_id === this.showTimeId);
  }

  tier(id) {
    return this.d.ticket_categories.find((c) => c.id === id);
  }

  async start() {
    this.tiers().forEach((c, i) => this.colors.set(c.id, PALETTE[i % PALETTE.length]));
    this.drawFrame();
    await this.loadSeats();
    // One socket for the whole program (it carries every show time); seats of other show times
    // are simply not on the map and are skipped.
    this.feed = new SeatFeed(wsUrl(`/ws/programs/${this.d.id}/seats`), {
      onSnapshot: (f) => this.applySnapshot(f),
      onDelta: (f) => this.applyDelta(f),
      onState: (s) => {
        this.liveNode.textContent = s === "live" ? "● Live" : s === "connecting" ? "Connecting…" : "Reconnecting…";
        this.liveNode.dataset.state = s;
      },
    });
  }

  destroy() {
    if (this.feed) this.feed.stop();
  }

  // ---- drawing -------------------------------------------------------------------------------

  drawFrame() {
    const d = this.d;
    const onSale = new Date(d.on_sale_at) > new Date()
      ? el("p", { class: "notice" }, `On sale from ${when(d.on_sale_at)}.`) : null;
    this.liveNode = el("span", { class: "live", "data-testid": "live-status", "aria-live": "off" }, "Connecting…");
    this.tiersNode = el("ul", { class: "tiers", "aria-label": "Price tiers" });
    this.mapBox = el("div", { class: "map-box" }, el("p", { class: "hint" }, "Loading seats…"));
    this.summaryNode = el("div", { class: "summary", "data-testid": "selection", "aria-live": "polite" });
    this.hintNode = el("p", { class: "hint", "data-testid": "buyer-hint" });
    this.orderButton = el("button", { type: "button", class: "primary big", id: "place-order", "data-testid": "place-order" }, "Place order");
    this.orderButton.addEventListener("click", () => this.placeOrder());
    const buyersBox = el("section", { class: "card buyers-box", "aria-label": "Ticket buyers" });
    const zoom = el("button", { type: "button", class: "small", id: "map-zoom", "aria-pressed": "false" }, "Zoom");
    zoom.addEventListener("click", () => {
      const on = this.mapBox.classList.toggle("zoomed");
      zoom.setAttribute("aria-pressed", String(on));
    });

    append(this.root,
      el("p", {}, el("a", { href: "#/" }, "← All programs")),
      el("h1", { "data-testid": "program-title" }, d.title),
      el("p", { class: "meta" }, [d.venue, d.area, d.category].filter(Boolean).join(" · ")),
      d.description ? el("p", {}, d.description) : null,
      onSale,
      el("p", { class: "meta", "data-testid": "limits" },
        `Up to ${d.per_order_limit} tickets per order, ${d.per_account_limit} per account.`),
      this.showTimePicker(),
      el("div", { class: "program-layout" },
        el("section", { class: "card map-card", "aria-label": "Seats" },
          el("div", { class: "map-head" }, el("h2", {}, "Seats"), this.liveNode, zoom),
          legend(),
          this.mapBox),
        el("div", { class: "side" },
          el("section", { class: "card", "aria-label": "Tiers" }, el("h2", {}, "Tiers"), this.tiersNode),
          buyersBox,
          el("section", { class: "card order-box", "aria-label": "Your order" },
            el("h2", {}, "Your order"), this.summaryNode, this.hintNode, this.orderButton))),
    );
    this.drawTiers();
    if (session.me) {
      this.buyers = ticketBuyersSection(buyersBox, () => this.drawSummary());
    } else {
      buyersBox.append(el("h2", {}, "Ticket buyers"),
        el("p", {}, el("a", { href: signInLink(), id: "signin-to-order" }, "Sign in"), " to choose ticket buyers and order."));
    }
    this.drawSummary();
  }

  showTimePicker() {
    const times = this.d.show_times;
    if (times.length <= 1) {
      return times.length ? el("p", { class: "meta" }, `Show: ${when(times[0].starts_at)}`) : null;
    }
    const s = el("select", { id: "show-time" },
      times.map((t) => el("option", { value: t.id, selected: t.id === this.showTimeId }, when(t.starts_at))));
    s.addEventListener("change", () => {
      // The hash keeps the choice across reloads; the router then redraws the page for it.
      location.hash = `#/programs/${this.d.id}?show=${s.value}`;
    });
    return el("label", { class: "field inline" }, el("span", {}, "Show time"), s);
  }

  drawTiers() {
    this.tiersNode.replaceChildren(...this.tiers().map((c) => {
      const input = el("input", {
        type: "number", min: 0, max: this.d.per_order_limit, value: this.quantities.get(c.id) || 0,
        id: c.seated ? `best-${c.id}` : `qty-${c.id}`,
        "data-testid": c.seated ? "best-quantity" : "ga-quantity", "data-tier-id": c.id, inputmode: "numeric",
      });
      input.addEventListener("input", () => this.setQuantity(c.id, input));
      return el("li", { class: "tier", "data-testid": "tier", "data-tier-id": c.id },
        el("span", { class: "swatch", style: `background:${this.colors.get(c.id)}`, "aria-hidden": "true" }),
        el("span", { class: "tier-name" }, c.name),
        el("span", { class: "tier-price" }, money(c.price_cents)),
        el("span", { class: "tier-remaining", "data-testid": "tier-remaining", id: `remaining-${c.id}` }, remainingText(c.remaining)),
        el("label", { class: "qty" }, el("span", {}, c.seated ? "Best available ×" : "Tickets"), input));
    }));
  }

  async loadSeats() {
    const m = await api(`/programs/${this.d.id}/seats?show_time_id=${this.showTimeId}`);
    const seated = m.categories.filter((c) => c.seated !== false && c.seats.length);
    if (!seated.length) {
      this.mapBox.replaceChildren(el("p", { class: "hint" }, "General admission only: choose a quantity per tier."));
      return;
    }
    this.map = new SeatMap(this.mapBox, seated, (id) => this.colors.get(id) || PALETTE[0], (id) => this.toggleSeat(id));
  }

  drawSummary() {
    const intent = this.intent();
    const picked = this.map ? this.map.selectedIds() : [];
    const lines = picked.map((id) => {
      const s = this.map.get(id);
      return el("li", { "data-seat-id": id }, `${s.tier}: row ${s.row} seat ${s.col} — ${money(s.price)}`);
    });
    this.summaryNode.replaceChildren();
    append(this.summaryNode,
      !intent ? el("p", { class: "hint" }, "Pick seats on the map, or a quantity in a tier.") :
        picked.length ? el("ul", { class: "picked" }, lines) :
          el("p", {}, `${intent.count} × ${this.tier(intent.part.ticket_category_id).name}` +
            (this.tier(intent.part.ticket_category_id).seated ? " (best available)" : "")),
      intent ? el("p", { class: "total" }, "Total ", el("strong", { "data-testid": "total" }, money(intent.total))) : null,
    );
    this.hintNode.textContent = this.buyerHint(intent);
  }

  /** Tells the buyer when the ticket buyers ticked do not match the tickets chosen. */
  buyerHint(intent) {
    if (!session.me) return "";
    const want = intent ? intent.count : 0;
    const have = this.buyers ? this.buyers.checkedIds().length : 0;
    if (!want || want === have) return "";
    return `${want} ticket${want === 1 ? "" : "s"} need ${want} ticket buyer${want === 1 ? "" : "s"}; you ticked ${have}.`;
  }

  // ---- choosing ------------------------------------------------------------------------------

  chosenCount() {
    const i = this.intent();
    return i ? i.count : 0;
  }

  toggleSeat(id) {
    const s = this.map.get(id);
    clearError();
    if (s.selected) {
      this.map.select(id, false);
    } else if (!this.d.choose_seats) {
      showMessage("Seats of this program are assigned automatically: use “Best available” in a tier.");
      return;
    } else if (s.status !== "available") {
      showMessage(`Row ${s.row} seat ${s.col} is ${s.status === "held" ? "held by another buyer" : "sold"}.`);
      return;
    } else {
      if (this.quantities.size) this.clearQuantities();
      if (this.map.selectedIds().length >= this.d.per_order_limit) {
        showMessage(`You can choose at most ${this.d.per_order_limit} tickets per order.`);
        return;
      }
      this.map.select(id, true);
    }
    this.drawSummary();
  }

  setQuantity(tierId, input) {
    let n = Math.max(0, Math.floor(Number(input.value) || 0));
    if (n > this.d.per_order_limit) {
      n = this.d.per_order_limit;
      input.value = n;
      showMessage(`You can choose at most ${this.d.per_order_limit} tickets per order.`);
    }
    // One tier per order: a quantity here replaces seats and other tiers' quantities.
    if (n > 0) {
      for (const id of this.map ? this.map.selectedIds() : []) this.map.select(id, false);
      for (const other of this.tiersNode.querySelectorAll("input[data-tier-id]")) {
        if (Number(other.dataset.tierId) !== tierId) other.value = 0;
      }
      this.quantities.clear();
      this.quantities.set(tierId, n);
    } else {
      this.quantities.delete(tierId);
    }
    this.drawSummary();
  }

  clearQuantities() {
    this.quantities.clear();
    for (const input of this.tiersNode.querySelectorAll("input[data-tier-id]")) input.value = 0;
  }

  /** What would be ordered now: {count, total, part of the body}, or null. */
  intent() {
    const picked = this.map ? this.map.selectedIds() : [];
    if (picked.length) {
      const seats = picked.map((id) => ({ seat_id: id, price_cents: this.map.get(id).price }));
      return { count: seats.length, total: seats.reduce((t, s) => t + s.price_cents, 0), part: { seats } };
    }
    for (const [tierId, n] of this.quantities) {
      if (n > 0) {
        return { count: n, total: n * this.tier(tierId).price_cents, part: { ticket_category_id: tierId, quantity: n } };
      }
    }
    return null;
  }

  // ---- live updates --------------------------------------------------------------------------

  applySnapshot(frame) {
    const lost = [];
    for (const c of frame.categories) {
      if (this.map) for (const s of c.seats) if (this.map.setStatus(s.id, s.status)) lost.push(s.id);
      if (c.counts) this.setRemaining(c.id, c.counts.available);
    }
    this.afterLive(lost);
  }

  applyDelta(frame) {
    const lost = [];
    if (this.map) {
      for (const ch of frame.changes || []) if (this.map.setStatus(ch.seat_id, ch.status)) lost.push(ch.seat_id);
    }
    for (const c of frame.counts || []) this.setRemaining(c.ticket_category_id, c.available);
    this.afterLive(lost);
  }

  afterLive(lost) {
    if (!lost.length) return;
    const names = lost.map((id) => {
      const s = this.map.get(id);
      return `row ${s.row} seat ${s.col}`;
    });
    showMessage(`Sorry — ${names.join(", ")} was just taken by someone else and removed from your selection.`, 10000);
    this.drawSummary();
  }

  setRemaining(tierId, available) {
    const c = this.tier(tierId);
    if (!c || available === undefined) return;
    c.remaining = available;
    const node = document.getElementById(`remaining-${tierId}`);
    if (node) node.textContent = remainingText(available);
  }

  // ---- ordering ------------------------------------------------------------------------------

  async placeOrder() {
    if (this.inFlight) return; // a second click while the first is on its way does nothing
    clearError();
    if (!session.me) {
      location.hash = signInLink();
      return;
    }
    const intent = this.intent();
    if (!intent) {
      showError("Choose seats on the map or a quantity first.");
      return;
    }
    const buyerIds = this.buyers.checkedIds().sort((a, b) => a - b);
    if (buyerIds.length !== intent.count) {
      showError(`Tick exactly ${intent.count} ticket buyer${intent.count === 1 ? "" : "s"} — one per ticket (you ticked ${buyerIds.length}).`);
      return;
    }
    const body = { program_id: this.d.id, show_time_id: this.showTimeId, ticket_buyer_ids: buyerIds, ...intent.part };
    const bodyText = JSON.stringify(body);
    // Same order (same body) → same key, so a retry after a lost answer cannot order twice;
    // a different choice is a different order and gets a fresh key.
    if (!this.pending || this.pending.bodyText !== bodyText) this.pending = { key: newKey(), bodyText };
    this.setBusy(true);
    try {
      const order = await this.send(body, this.pending.key);
      this.pending = null;
      location.hash = `#/orders/${order.order_no}`;
    } catch (e) {
      this.orderFailed(e);
    } finally {
      this.setBusy(false);
    }
  }

  /** POSTs the order; IN_FLIGHT (the same key still being processed) is waited out and retried. */
  async send(body, key) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api("/orders", { method: "POST", body, headers: { "Idempotency-Key": key } });
      } catch (e) {
        if (!(e instanceof ApiError) || e.code !== "IN_FLIGHT" || attempt >= 10) throw e;
        await new Promise((r) => setTimeout(r, 700));
      }
    }
  }

  orderFailed(e) {
    showError(e);
    if (!(e instanceof ApiError)) return;
    if (e.code === "SEAT_UNAVAILABLE" && this.map) {
      // Drop the taken seats from the selection now; the live feed repaints their status.
      for (const id of e.details.seat_ids || []) this.map.select(Number(id), false);
      this.drawSummary();
    } else if (e.status === 401) {
      loadMe();
    }
  }

  setBusy(on) {
    this.inFlight = on;
    this.orderButton.disabled = on;
    this.orderButton.setAttribute("aria-busy", String(on));
    this.orderButton.textContent = on ? "Placing order…" : "Place order";
  }
}

function remainingText(n) {
  return n > 0 ? `${n} left` : "Sold out";
}

function legend() {
  const item = (status, text) => el("li", {}, el("span", { class: `legend-seat ${status}`, "aria-hidden": "true" }), ` ${text}`);
  return el("ul", { class: "legend", "aria-label": "Legend" },
    item("available", "available (colour = tier)"), item("selected", "your choice"), item("held", "held"), item("sold", "sold"));
}
