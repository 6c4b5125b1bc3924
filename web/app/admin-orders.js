// Orders of a program (filter by status, paged) with each order's processing steps, and the
// discarded orders (attempts whose commit failed) with whether their seats were released.

import { money, el } from "./api.js";
import { adminApi, section, errorLine, table, pager, selectFilter, badge, fmtTime, handledByPage, query, newestOnly } from "./admin-ui.js";

const PER_PAGE = 20;
const ORDER_STATUSES = ["pending_payment", "paid", "cancelled", "expired", "refunded"];

export function ordersSection(scope, ctx) {
  const filters = { status: "", order_no: "", page: 1 };
  const statusFilter = selectFilter(
    "orders-status",
    "Status",
    [["", "all"], ...ORDER_STATUSES.map((s) => [s, s])],
    "",
    (v) => {
      filters.status = v;
      load(1);
    },
  );
  const orderNo = el("input", { id: "orders-order-no", type: "search", inputmode: "numeric", placeholder: "order no", "aria-label": "Order number", size: 14 });
  const search = el(
    "form",
    { class: "inline", onsubmit: (e) => { e.preventDefault(); filters.order_no = orderNo.value.trim(); load(1); } },
    orderNo,
    el("button", { type: "submit" }, "Find"),
  );
  const refresh = el("button", { type: "button", "data-testid": "orders-refresh", onclick: () => load() }, "Refresh");
  const { node, body } = section("Orders", "orders", [statusFilter, search, refresh]);
  const error = errorLine();
  const holder = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  body.append(error.node, holder);

  const start = newestOnly();

  async function load(page = filters.page) {
    const current = start();
    filters.page = page;
    try {
      const listing = await adminApi(`/admin/programs/${ctx.programId}/orders${query({ status: filters.status, order_no: filters.order_no, page, per_page: PER_PAGE })}`);
      if (scope.closed || !current()) return;
      error.clear();
      holder.replaceChildren(
        listing.items.length ? table(["Order", "Status", "Total", "Reconcile", "Created", "Tickets", "Steps"], listing.items.flatMap(orderRows), "Orders") : el("p", { class: "muted", "data-testid": "orders-empty" }, "No orders match."),
        pager("orders", listing, load),
      );
    } catch (e) {
      if (!scope.closed && !handledByPage(e)) error.show(e);
    }
  }
  load(1);
  return { node, refresh: load };
}

/** The order's row and its (hidden until asked) steps row. */
function orderRows(o) {
  const stepsId = `steps-${o.order_no}`;
  const stepsRow = el(
    "tr",
    { id: stepsId, class: "steps-row", hidden: true },
    el("td", { colspan: 7 }, stepsList(o.steps || [])),
  );
  const toggle = el(
    "button",
    {
      type: "button",
      class: "link",
      "data-testid": "order-steps-toggle",
      "aria-expanded": "false",
      "aria-controls": stepsId,
      onclick: () => {
        const open = stepsRow.hidden;
        stepsRow.hidden = !open;
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = `${open ? "Hide" : "Show"} ${o.steps.length} steps`;
      },
    },
    `Show ${(o.steps || []).length} steps`,
  );
  const row = el(
    "tr",
    { "data-testid": "admin-order", "data-order-no": o.order_no, "data-status": o.status },
    el("th", { scope: "row", class: "mono" }, o.order_no),
    el("td", { "data-field": "status" }, badge(o.status)),
    el("td", { class: "num", "data-field": "total" }, money(o.total_cents)),
    el("td", { "data-field": "reconcile_status" }, badge(o.reconcile_status)),
    el("td", {}, fmtTime(o.created_at)),
    el("td", { class: "num" }, (o.tickets || []).length),
    el("td", {}, toggle),
  );
  return [row, stepsRow];
}

function stepsList(steps) {
  if (!steps.length) return el("p", { class: "muted" }, "No steps recorded.");
  return el(
    "ol",
    { class: "steps", "data-testid": "order-steps" },
    steps.map((s) =>
      el(
        "li",
        { "data-testid": "order-step", "data-step": s.step, "data-store": s.store },
        el("strong", {}, s.step),
        " · ",
        el("span", { class: "store" }, s.store),
        " · ",
        el("time", { datetime: s.at }, fmtTime(s.at)),
        stepExtra(s),
      ),
    ),
  );
}

/** What a step is about (event, consumer, bill, status), when it names something. */
function stepExtra(s) {
  const bits = [];
  if (s.event_type) bits.push(s.event_type);
  if (s.consumer) bits.push(`consumer ${s.consumer}`);
  if (s.payment_id) bits.push(`bill ${s.payment_id}`);
  if (s.status) bits.push(`status ${s.status}`);
  return bits.length ? el("span", { class: "muted" }, ` (${bits.join(", ")})`) : null;
}

export function discardedSection(scope, ctx) {
  const refresh = el("button", { type: "button", "data-testid": "discarded-refresh", onclick: () => load() }, "Refresh");
  const { node, body } = section("Discarded orders", "discarded-orders", [refresh]);
  const error = errorLine();
  const holder = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  body.append(error.node, holder);
  let shownPage = 1;
  const start = newestOnly();

  async function load(page = shownPage) {
    const current = start();
    shownPage = page;
    try {
      const listing = await adminApi(`/admin/programs/${ctx.programId}/discarded-orders${query({ page, per_page: PER_PAGE })}`);
      if (scope.closed || !current()) return;
      error.clear();
      const rows = listing.items.map((d) =>
        el(
          "tr",
          { "data-testid": "discarded-order", "data-order-no": d.order_no, "data-seats-free": String(d.seats_free) },
          el("th", { scope: "row", class: "mono" }, d.order_no),
          el("td", { class: "reason" }, d.reason),
          el("td", { "data-field": "seats_free" }, d.seats_free ? badge("released") : el("span", { class: "badge badge-problem" }, "still taken")),
          el("td", { class: "num" }, Array.isArray(d.tickets) ? d.tickets.length : "—"),
          el("td", {}, d.user_id),
          el("td", {}, fmtTime(d.created_at)),
        ),
      );
      holder.replaceChildren(
        rows.length ? table(["Order", "Reason", "Seats free", "Tickets", "User", "Discarded at"], rows, "Discarded orders") : el("p", { class: "muted", "data-testid": "discarded-empty" }, "No discarded orders."),
        pager("discarded", listing, load),
      );
    } catch (e) {
      if (!scope.closed && !handledByPage(e)) error.show(e);
    }
  }
  load(1);
  return { node, refresh: load };
}
