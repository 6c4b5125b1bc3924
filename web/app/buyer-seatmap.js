// The seat map: ONE <svg> built once from a single markup string (fast for 10,000+ seats), then
// updated seat by seat through a Map of id → element. A live delta touches only the seats it
// names; nothing is ever redrawn wholesale.
//
// Each tier is a block of rows stacked under the stage; rows and columns are the tier's own
// (1-based), as GET /programs/{id}/seats gives them.

import { money } from "./api.js";

const CELL = 10; // one seat's pitch in SVG units
const SEAT = 8; // drawn seat size (the rest is the aisle between seats)
const LABEL = 16; // height of a tier's caption line
const GAP = 8; // space between tier blocks
const STAGE = 22;

/** Tier colours: distinct, dark enough for a white outline to show on selected seats. */
export const PALETTE = ["#2f6fdf", "#1c9a6b", "#c9751a", "#9b46c2", "#cf3f5b", "#11869a", "#7a8a12", "#5960c9"];

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

export class SeatMap {
  /**
   * @param container element the <svg> goes into
   * @param categories seated tiers of one show time: {id, name, price_cents, seats:[{id,row,col,status}]}
   * @param colorOf tier id → colour
   * @param onToggle (seatId) called on click / Enter / Space; the owner decides and calls select()
   */
  constructor(container, categories, colorOf, onToggle) {
    this.container = container;
    this.onToggle = onToggle;
    /** seat id → {el, status, selected, cat, row, col, price} */
    this.seats = new Map();
    /** "cat:row:col" → seat id, for arrow-key moves */
    this.grid = new Map();
    /** ids selected here, in the order they were picked */
    this.picked = new Set();
    this.build(categories, colorOf);
    this.listen();
  }

  build(categories, colorOf) {
    const width = Math.max(20, ...categories.map((c) => maxOf(c.seats, "col"))) * CELL;
    const parts = [];
    let y = 0;
    parts.push(`<rect class="stage" x="${width * 0.2}" y="0" width="${width * 0.6}" height="${STAGE - 8}" rx="3"></rect>`,
      `<text class="stage-label" x="${width / 2}" y="${STAGE - 12}" text-anchor="middle">STAGE</text>`);
    y += STAGE;
    for (const c of categories) {
      const cols = maxOf(c.seats, "col");
      const rows = maxOf(c.seats, "row");
      const left = ((width - cols * CELL) / 2) | 0; // centre narrower tiers
      const price = money(c.price_cents);
      parts.push(`<g role="group" aria-label="${esc(c.name)}, ${price}" data-tier-id="${c.id}">`,
        `<text class="tier-label" x="${width / 2}" y="${y + LABEL - 4}" text-anchor="middle">${esc(c.name)} · ${price}</text>`);
      const top = y + LABEL;
      const fill = colorOf(c.id);
      for (const s of c.seats) {
        const x = left + (s.col - 1) * CELL;
        const sy = top + (s.row - 1) * CELL;
        parts.push(`<rect id="seat-${s.id}" data-seat-id="${s.id}" data-status="${s.status}" x="${x}" y="${sy}" width="${SEAT}" height="${SEAT}" rx="2" fill="${fill}" tabindex="0" role="button" aria-pressed="false" aria-label="${label(s.row, s.col, price, s.status)}"></rect>`);
        this.seats.set(s.id, { el: null, status: s.status, selected: false, cat: c.id, row: s.row, col: s.col, price: c.price_cents, priceText: price, tier: c.name });
        this.grid.set(`${c.id}:${s.row}:${s.col}`, s.id);
      }
      parts.push("</g>");
      y = top + rows * CELL + GAP;
    }
    // viewBox + width 100%: the map scales to the screen; CSS may widen it for zooming.
    this.container.innerHTML = `<svg class="seatmap" data-testid="seat-map" viewBox="0 0 ${width} ${y}" preserveAspectRatio="xMidYMin meet" role="group" aria-label="Seat map">${parts.join("")}</svg>`;
    this.svg = this.container.firstElementChild;
    for (const node of this.svg.querySelectorAll("rect[data-seat-id]")) {
      this.seats.get(Number(node.dataset.seatId)).el = node;
    }
  }

  /** One delegated listener pair for all seats (not 10,000 listeners). */
  listen() {
    const seatOf = (target) => target.closest && target.closest("rect[data-seat-id]");
    this.svg.addEventListener("click", (ev) => {
      const node = seatOf(ev.target);
      if (node) this.onToggle(Number(node.dataset.seatId));
    });
    this.svg.addEventListener("keydown", (ev) => {
      const node = seatOf(ev.target);
      if (!node) return;
      const id = Number(node.dataset.seatId);
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault(); // Space would scroll the page
        this.onToggle(id);
        return;
      }
      const step = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[ev.key];
      if (step) {
        ev.preventDefault();
        this.moveFocus(id, step);
      }
    });
  }

  moveFocus(id, [dr, dc]) {
    const s = this.seats.get(id);
    const next = this.grid.get(`${s.cat}:${s.row + dr}:${s.col + dc}`);
    if (next !== undefined) this.seats.get(next).el.focus();
  }

  get(id) {
    return this.seats.get(id);
  }

  /** Marks a seat (un)selected by this buyer. */
  select(id, on) {
    const s = this.seats.get(id);
    if (!s || s.selected === on) return;
    s.selected = on;
    if (on) this.picked.add(id);
    else this.picked.delete(id);
    this.paint(s);
  }

  /**
   * Sets a seat's server status. Returns true if the seat was selected here and is no longer
   * available (the caller tells the buyer); the selection is dropped in that case.
   */
  setStatus(id, status) {
    const s = this.seats.get(id);
    if (!s || s.status === status) return false;
    s.status = status;
    const lost = s.selected && status !== "available";
    if (lost) {
      s.selected = false;
      this.picked.delete(id);
    }
    this.paint(s);
    return lost;
  }

  paint(s) {
    const shown = s.selected ? "selected" : s.status;
    s.el.setAttribute("data-status", shown);
    s.el.setAttribute("aria-pressed", String(s.selected));
    s.el.setAttribute("aria-label", label(s.row, s.col, s.priceText, shown));
  }

  selectedIds() {
    return [...this.picked];
  }
}

function label(row, col, price, status) {
  return `Row ${row} seat ${col}, ${price}, ${status}`;
}

function maxOf(seats, key) {
  let m = 0;
  for (const s of seats) if (s[key] > m) m = s[key];
  return m;
}

/**
 * The live seat feed of a program (/ws/programs/{id}/seats): snapshot, then deltas with a seq
 * growing by one. A gap means frames were missed: ask for a fresh snapshot ({"type":"resync"}).
 * A closed socket reconnects with backoff; its first frame is a snapshot, which heals anything
 * missed meanwhile.
 */
export class SeatFeed {
  constructor(url, { onSnapshot, onDelta, onState }) {
    this.url = url;
    this.handlers = { onSnapshot, onDelta, onState: onState || (() => {}) };
    this.seq = null;
    this.stopped = false;
    this.retryMs = 500;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.handlers.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws || this.stopped) return;
      this.seq = null;
      this.handlers.onState("reconnecting");
      this.timer = setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 10000);
    };
    ws.onerror = () => ws.close();
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "snapshot") {
      this.seq = frame.seq;
      this.retryMs = 500;
      this.handlers.onState("live");
      this.handlers.onSnapshot(frame);
    } else if (frame.type === "delta") {
      if (this.seq === null) return; // waiting for the snapshot a resync asked for
      if (frame.seq !== this.seq + 1) {
        this.resync();
        return;
      }
      this.seq = frame.seq;
      this.handlers.onDelta(frame);
    } else if (frame.type === "resync") {
      this.resync();
    }
  }

  resync() {
    this.seq = null;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "resync" }));
    else if (this.ws) this.ws.close();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}
