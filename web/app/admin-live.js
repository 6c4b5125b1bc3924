// Live figures from /ws/admin: this program's hot categories (rates and hold latency as
// sparklines of the last 60 frames), the order pipeline, and alerts (newest first, also toasted).
// The socket reconnects with backoff; the indicator says whether the figures are current.

import { wsUrl, el } from "./api.js";
import { adminApi, section, fmtNum, fmtTime, toast, categoryLabel } from "./admin-ui.js";
import { Ring, sparkline } from "./admin-spark.js";

const POINTS = 60;
const MAX_ALERTS = 100;
/** Frames are due every interval_ms (1 s); this many missed ones make the figures "stale". */
const STALE_AFTER_FRAMES = 3;

export function liveSection(scope, ctx) {
  const indicator = el("span", { class: "conn", "data-testid": "ws-state", "data-state": "connecting", role: "status" }, "connecting…");
  const { node, body } = section("Live", "live", [indicator]);
  const stamp = el("p", { class: "muted small", "data-testid": "live-updated" }, "Waiting for the first frame…");
  const cards = el("div", { class: "live-cards", "data-testid": "live-categories" });
  const idle = el("p", { class: "muted small", "data-testid": "live-idle" },
    "No category of this program has a running actor on this server (idle categories passivate; figures appear with the first hold).");
  const pipeline = pipelinePanel();
  const alerts = el("ol", { class: "alerts", "data-testid": "alerts", "aria-label": "Alerts, newest first" });
  const noAlerts = el("li", { class: "muted", "data-testid": "no-alerts" }, "No alerts since this page opened.");
  alerts.append(noAlerts);

  body.append(
    stamp,
    el("h3", {}, "Categories"),
    idle,
    cards,
    el("h3", {}, "Pipeline"),
    pipeline.node,
    el("h3", {}, "Alerts"),
    alerts,
  );

  const categoryCards = new Map(); // category id → card (kept across frames)
  let lastFrameAt = 0;
  let intervalMs = 1000;

  function setState(state, text) {
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  function onFrame(frame) {
    if (frame.type !== "stats") return;
    lastFrameAt = Date.now();
    intervalMs = frame.interval_ms || 1000;
    setState("live", "live");
    stamp.textContent = `Frame ${frame.seq ?? ""} at ${fmtTime(frame.at)}`;
    const mine = (frame.categories || []).filter((c) => c.program_id === ctx.programId);
    const seen = new Set();
    for (const c of mine) {
      seen.add(c.id);
      if (!categoryCards.has(c.id)) {
        const card = categoryCard(c.id, ctx);
        categoryCards.set(c.id, card);
        cards.append(card.node);
      }
      categoryCards.get(c.id).update(c);
    }
    // A category whose actor stopped keeps its card; its charts show a gap from now on.
    for (const [id, card] of categoryCards) if (!seen.has(id)) card.update(null);
    idle.hidden = categoryCards.size > 0;
    pipeline.update(frame.pipeline || {});
    addAlerts(frame.alerts || []);
  }

  function addAlerts(list) {
    if (!list.length) return;
    noAlerts.remove();
    for (const a of list) {
      const text = alertText(a);
      alerts.prepend(
        el(
          "li",
          { class: `alert alert-${a.source}`, "data-testid": "alert", "data-source": a.source, "data-program-id": a.program_id ?? "" },
          el("time", { datetime: a.created_at }, fmtTime(a.created_at)),
          " ",
          text,
        ),
      );
    }
    while (alerts.children.length > MAX_ALERTS) alerts.lastElementChild.remove();
    // Toast a few; a storm would cover the page (the list keeps them all).
    list.slice(0, 3).forEach((a) => toast(alertText(a), "alert", 6000));
    if (list.some((a) => a.source === "finding")) ctx.refreshFindings();
  }

  connect(scope, { onFrame, setState });

  // Watchdog: an open socket that stopped delivering frames is not "live".
  const watchdog = setInterval(() => {
    if (lastFrameAt && indicator.dataset.state === "live" && Date.now() - lastFrameAt > STALE_AFTER_FRAMES * intervalMs) {
      setState("stale", `stale (no frame for ${Math.round((Date.now() - lastFrameAt) / 1000)} s)`);
    }
  }, 1000);
  scope.add(() => clearInterval(watchdog));
  return { node };
}

/** Opens /ws/admin and keeps it open (backoff 1 s → 15 s) until the scope closes. */
function connect(scope, { onFrame, setState }) {
  let socket = null;
  let retry = null;
  let delay = 1000;

  function open() {
    if (scope.closed) return;
    setState("connecting", "connecting…");
    socket = new WebSocket(wsUrl("/ws/admin", true));
    socket.onopen = () => {
      delay = 1000;
      setState("open", "connected, waiting for a frame");
    };
    socket.onmessage = (m) => {
      try {
        onFrame(JSON.parse(m.data));
      } catch (e) {
        console.error("bad admin frame", e);
      }
    };
    socket.onclose = (e) => {
      if (scope.closed) return;
      // 1008: the token expired or was signed out. Asking /me lets adminApi() switch to the
      // sign-in form (401) or the operators-only notice (403); otherwise just reconnect.
      if (e.code === 1008) adminApi("/me").catch(() => {});
      const seconds = Math.round(delay / 1000);
      setState("closed", `disconnected — retrying in ${seconds} s`);
      retry = setTimeout(open, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }

  scope.add(() => {
    clearTimeout(retry);
    if (socket) {
      socket.onclose = null;
      socket.close(1000, "page left");
    }
  });
  open();
}

/** One hot category: current figures and two sparklines (rates; hold latency). */
function categoryCard(id, ctx) {
  const h = {
    holds: new Ring(POINTS),
    sales: new Ring(POINTS),
    expiries: new Ring(POINTS),
    p50: new Ring(POINTS),
    p99: new Ring(POINTS),
  };
  const figures = el("dl", { class: "figures" });
  const rates = el("div", { class: "chart" });
  const latency = el("div", { class: "chart" });
  const state = el("span", { class: "muted small" });
  const node = el(
    "article",
    { class: "live-card", "data-testid": "live-category", "data-category-id": id },
    el("h4", {}, categoryLabel(ctx, id), " ", state),
    figures,
    el("div", { class: "charts" },
      el("figure", {}, rates, el("figcaption", {}, legend([["holds", "s-holds"], ["sales", "s-sales"], ["expiries", "s-expiries"]]), " /s")),
      el("figure", {}, latency, el("figcaption", {}, "hold latency ", legend([["p50", "s-p50"], ["p99", "s-p99"]]), " ms")),
    ),
  );

  function update(c) {
    h.holds.push(c ? c.holds_per_sec : null);
    h.sales.push(c ? c.sales_per_sec : null);
    h.expiries.push(c ? c.expiries_per_sec : null);
    h.p50.push(c && c.hold_latency_ms ? c.hold_latency_ms.p50 : null);
    h.p99.push(c && c.hold_latency_ms ? c.hold_latency_ms.p99 : null);
    state.textContent = c ? "" : "(actor stopped)";
    if (c) {
      figures.replaceChildren(
        ...figure("holds/s", fmtNum(c.holds_per_sec, 2), "holds"),
        ...figure("sales/s", fmtNum(c.sales_per_sec, 2), "sales"),
        ...figure("expiries/s", fmtNum(c.expiries_per_sec, 2), "expiries"),
        ...figure("hold p50 / p99", c.hold_latency_ms ? `${fmtNum(c.hold_latency_ms.p50, 2)} / ${fmtNum(c.hold_latency_ms.p99, 2)} ms` : "—", "latency"),
        ...figure("mailbox", c.mailbox_depth ?? "—", "mailbox"),
        ...figure("actor a/h/s", c.actor ? `${c.actor.available} / ${c.actor.held} / ${c.actor.sold}` : "—", "actor"),
      );
    }
    rates.replaceChildren(sparkline([
      { label: "holds", cls: "s-holds", ring: h.holds },
      { label: "sales", cls: "s-sales", ring: h.sales },
      { label: "expiries", cls: "s-expiries", ring: h.expiries },
    ], { unit: "/s" }));
    latency.replaceChildren(sparkline([
      { label: "p50", cls: "s-p50", ring: h.p50 },
      { label: "p99", cls: "s-p99", ring: h.p99 },
    ], { unit: " ms" }));
  }
  return { node, update };
}

function legend(items) {
  return items.map(([text, cls], i) => el("span", {}, i ? ", " : "", el("span", { class: `key ${cls}`, "aria-hidden": "true" }), text));
}

/** A <dt>/<dd> pair in a <div> (so the grid keeps them together); `key` names the figure (data-figure). */
function figure(label, value, key) {
  return [el("div", { class: "figure" }, el("dt", {}, label), el("dd", { "data-figure": key }, String(value)))];
}

/** Writer, outbox, relay, consumer figures, with sparklines for throughput and backlog. */
function pipelinePanel() {
  const batches = new Ring(POINTS);
  const commitP99 = new Ring(POINTS);
  const backlog = new Ring(POINTS);
  const figures = el("dl", { class: "figures" });
  const charts = el("div", { class: "charts" });
  const node = el("div", { class: "pipeline", "data-testid": "pipeline" }, figures, charts);

  function update(p) {
    const w = p.writer || {};
    batches.push(w.batches_per_sec ?? null);
    commitP99.push(w.commit_ms ? w.commit_ms.p99 : null);
    backlog.push(p.outbox_backlog ?? null);
    const warn = (n) => (n ? "warn" : "");
    figures.replaceChildren(
      ...figure("writer batches/s", fmtNum(w.batches_per_sec, 2), "batches_per_sec"),
      ...figure("mean batch size", fmtNum(w.mean_batch_size, 2), "mean_batch_size"),
      ...figure("commit p50 / p99", w.commit_ms ? `${fmtNum(w.commit_ms.p50, 2)} / ${fmtNum(w.commit_ms.p99, 2)} ms` : "—", "commit_ms"),
      ...figure("outbox backlog", fmtNum(p.outbox_backlog, 0), "outbox_backlog"),
      ...figure("relay lag", `${fmtNum(p.relay_lag_seconds, 1)} s`, "relay_lag_seconds"),
      ...figure("consumer lag", `${fmtNum(p.consumer_lag_seconds, 1)} s`, "consumer_lag_seconds"),
      ...figure("discarded orders", fmtNum(p.discarded_orders, 0), "discarded_orders"),
      ...figure("open findings", fmtNum(p.findings_open, 0), "findings_open"),
      ...figure("dead letters", fmtNum(p.dead_letters, 0), "dead_letters"),
    );
    // Counters an operator must act on stand out.
    for (const key of ["findings_open", "dead_letters", "discarded_orders"]) {
      figures.querySelector(`[data-figure=${key}]`).className = warn(p[key]);
    }
    charts.replaceChildren(
      el("figure", {}, sparkline([{ label: "batches/s", cls: "s-holds", ring: batches }], { unit: "/s" }), el("figcaption", {}, "writer batches/s")),
      el("figure", {}, sparkline([{ label: "p99", cls: "s-p99", ring: commitP99 }], { unit: " ms" }), el("figcaption", {}, "commit p99 ms")),
      el("figure", {}, sparkline([{ label: "backlog", cls: "s-expiries", ring: backlog }]), el("figcaption", {}, "outbox backlog")),
    );
  }
  return { node, update };
}

/** One sentence per alert. */
function alertText(a) {
  if (a.source === "finding") {
    const where = a.program_id ? ` (program ${a.program_id})` : "";
    return `Finding #${a.id}: ${a.kind} on ${a.subject} — ${a.status}${where}`;
  }
  if (a.source === "dead_letter") {
    return `Dead letter #${a.id}: ${a.consumer} gave up on event ${a.event_id} after ${a.attempts} attempt(s): ${a.last_error}`;
  }
  return JSON.stringify(a);
}
