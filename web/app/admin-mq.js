// MQ message records of a program: each order event's send, consume and reconcile status,
// with "mark handled" and "re-publish" (both audit-logged on the server).

import { el } from "./api.js";
import { adminApi, section, errorLine, table, pager, selectFilter, badge, fmtTime, actionButton, toast, handledByPage, query, newestOnly } from "./admin-ui.js";

const PER_PAGE = 20;
/** `status` matches a send status or a reconcile status (src/http/mq.rs, MqQuery). */
const STATUSES = [
  ["", "all"],
  ["pending", "send: pending"],
  ["sent", "send: sent"],
  ["failed", "send: failed"],
  ["unreconciled", "reconcile: unreconciled"],
  ["ok", "reconcile: ok"],
  ["problem", "reconcile: problem"],
  ["handled", "reconcile: handled"],
];

export function mqSection(scope, ctx) {
  const state = { status: "", page: 1 };
  const filter = selectFilter("mq-status", "Status", STATUSES, "", (v) => {
    state.status = v;
    load(1);
  });
  const refresh = el("button", { type: "button", "data-testid": "mq-refresh", onclick: () => load() }, "Refresh");
  const { node, body } = section("MQ messages", "mq-messages", [filter, refresh]);
  const error = errorLine();
  const holder = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  body.append(error.node, holder);

  const start = newestOnly();

  async function load(page = state.page) {
    const current = start();
    state.page = page;
    try {
      const listing = await adminApi(`/admin/programs/${ctx.programId}/mq-messages${query({ status: state.status, page, per_page: PER_PAGE })}`);
      if (scope.closed || !current()) return;
      error.clear();
      holder.replaceChildren(
        listing.items.length
          ? table(["Event", "Type", "Send", "Reconcile", "Created / sent", "Consumed by", "Actions"], listing.items.map((m) => messageRow(m, act)), "MQ messages")
          : el("p", { class: "muted", "data-testid": "mq-empty" }, "No messages match."),
        pager("mq", listing, load),
      );
    } catch (e) {
      if (!scope.closed && !handledByPage(e)) error.show(e);
    }
  }

  /** POSTs an action for one message, then redraws the list (its statuses changed). */
  async function act(eventId, action, done) {
    try {
      await adminApi(`/admin/mq-messages/${encodeURIComponent(eventId)}/${action}`, { method: "POST" });
      toast(done, "ok", 3000);
      await load();
    } catch (e) {
      if (!handledByPage(e)) error.show(e);
    }
  }

  load(1);
  return { node, refresh: load };
}

function messageRow(m, act) {
  const consumed = Object.entries(m.consumed || {});
  const dead = m.dead_lettered_by || [];
  return el(
    "tr",
    { "data-testid": "mq-message", "data-event-id": m.event_id, "data-send-status": m.send_status, "data-reconcile-status": m.reconcile_status },
    el(
      "th",
      { scope: "row" },
      el("details", {}, el("summary", { class: "mono" }, shortId(m.event_id)),
        el("div", { class: "small" }, `id ${m.event_id}`, el("br"), `topic ${m.topic}`, el("br"), `key ${m.key}`, el("br"), `message ${m.message_id || "—"}`),
        el("pre", { class: "json" }, JSON.stringify(m.payload, null, 2))),
    ),
    el("td", {}, m.type),
    el("td", { "data-field": "send_status" }, badge(m.send_status), el("span", { class: "muted small" }, ` ×${m.send_attempts}`)),
    el("td", { "data-field": "reconcile_status" }, badge(m.reconcile_status)),
    el("td", { class: "small" }, fmtTime(m.created_at), el("br"), fmtTime(m.sent_at)),
    el(
      "td",
      { class: "small" },
      consumed.length ? consumed.map(([c, at]) => el("div", {}, `${c} · ${fmtTime(at)}`)) : el("span", { class: "muted" }, "nobody yet"),
      dead.map((c) => el("div", { class: "warn" }, `dead-lettered by ${c}`)),
    ),
    el(
      "td",
      { class: "actions" },
      actionButton("Mark handled", () => act(m.event_id, "handled", "Message marked handled"), {
        "data-action": "handled",
        "data-testid": "mq-handled",
        disabled: m.reconcile_status === "handled",
      }),
      actionButton("Re-publish", () => act(m.event_id, "republish", "Message queued for publishing again"), {
        "data-action": "republish",
        "data-testid": "mq-republish",
      }),
    ),
  );
}

function shortId(id) {
  return String(id).slice(0, 8) + "…";
}
