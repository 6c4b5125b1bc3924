// Inventory side by side: per category the actor's, Postgres's and the Redis mirror's
// available / held / sold, refreshed every 2 s, with the seats on which they differ.
// Postgres is the truth, so a store is highlighted where it differs from Postgres.

import { el } from "./api.js";
import { adminApi, section, errorLine, table, fmtCounts, fmtTime, fmtNum, actionButton, toast, handledByPage, categoryLabel } from "./admin-ui.js";

const REFRESH_MS = 2000;
/** A broken category can differ on thousands of seats; the list shows the first ones. */
const MAX_SEATS_SHOWN = 50;

export function inventorySection(scope, ctx) {
  const run = actionButton("Reconcile now", () => reconcile(), { "data-testid": "reconcile-now", id: "reconcile-now" });
  const { node, body } = section("Inventory — actor · Postgres · Redis", "inventory", [run]);
  const error = errorLine();
  const stamp = el("p", { class: "muted small", "data-testid": "inventory-updated" }, "Loading…");
  const result = el("p", { class: "small", "data-testid": "reconcile-result", hidden: true });
  const holder = el("div");
  body.append(
    el("p", { class: "muted small" }, "Each cell: available / held / sold. Highlighted: differs from Postgres (the truth)."),
    error.node,
    holder,
    stamp,
    result,
  );

  async function refresh() {
    try {
      const view = await adminApi(`/admin/programs/${ctx.programId}/inventory`);
      if (scope.closed) return;
      error.clear();
      holder.replaceChildren(inventoryTable(view.categories, ctx));
      stamp.textContent = `${view.consistent ? "All stores agree" : "Stores differ"} · updated ${fmtTime(new Date().toISOString())}`;
      stamp.className = view.consistent ? "muted small" : "warn small";
    } catch (e) {
      if (!scope.closed && !handledByPage(e)) error.show(e);
    }
  }

  /** One reconciliation pass for this program now; then fresh inventory and findings. */
  async function reconcile() {
    try {
      const report = await adminApi(`/admin/reconciliations/run?program_id=${ctx.programId}`, { method: "POST" });
      if (scope.closed) return;
      result.textContent = passSummary(report);
      result.hidden = false;
      toast("Reconciliation pass done", "ok", 3000);
      await refresh();
      ctx.refreshFindings();
    } catch (e) {
      if (!scope.closed && !handledByPage(e)) error.show(e);
    }
  }

  scope.every(REFRESH_MS, refresh);
  return { node, refresh };
}

/** "Pass took 12 ms over 3 categories, 600 seats: 1 finding, 1 repaired." */
function passSummary(r) {
  const parts = [];
  if (r.duration_ms !== undefined) parts.push(`took ${fmtNum(r.duration_ms)} ms`);
  if (r.categories !== undefined) parts.push(`${r.categories} categories`);
  if (r.seats !== undefined) parts.push(`${r.seats} seats`);
  if (r.orders !== undefined) parts.push(`${r.orders} orders`);
  const found = `${r.findings ?? 0} finding(s), ${r.repaired ?? 0} repaired`;
  return `Reconciliation pass ${parts.join(", ")}: ${found}.`;
}

function inventoryTable(categories, ctx) {
  const rows = [];
  for (const c of categories) {
    rows.push(categoryRow(c, ctx));
    if (!c.consistent && c.differing_seats && c.differing_seats.length) rows.push(seatDiffRow(c));
  }
  return table(["Category", "Capacity", "Actor", "Postgres", "Redis", "State"], rows, "Inventory per store");
}

function sameCounts(a, b) {
  return a && b && a.available === b.available && a.held === b.held && a.sold === b.sold;
}

/** A store's cell; highlighted when it has counts that differ from Postgres's. */
function storeCell(store, counts, truth) {
  const differs = store !== "postgres" && counts && !sameCounts(counts, truth);
  return el(
    "td",
    {
      class: `num counts${differs ? " mismatch" : ""}${counts ? "" : " absent"}`,
      "data-store": store,
      "data-mismatch": differs ? "true" : "false",
      title: counts ? "available / held / sold" : store === "actor" ? "no actor runs on this server (idle category)" : "no mirror data",
    },
    fmtCounts(counts),
  );
}

function categoryRow(c, ctx) {
  return el(
    "tr",
    {
      "data-testid": "inventory-row",
      "data-category-id": c.ticket_category_id,
      "data-consistent": String(Boolean(c.consistent)),
      class: c.consistent ? "" : "row-bad",
    },
    el("th", { scope: "row" }, categoryLabel(ctx, c.ticket_category_id)),
    el("td", { class: "num" }, c.capacity),
    storeCell("actor", c.actor, c.postgres),
    storeCell("postgres", c.postgres, c.postgres),
    storeCell("redis", c.redis, c.postgres),
    el("td", {}, c.consistent ? el("span", { class: "badge badge-ok" }, "consistent") : el("span", { class: "badge badge-problem" }, `${c.differing_seats.length} seat(s) differ`)),
  );
}

/** The seats on which the stores differ, under the category's row. */
function seatDiffRow(c) {
  const seats = c.differing_seats.slice(0, MAX_SEATS_SHOWN);
  const items = seats.map((s) =>
    el(
      "li",
      { "data-testid": "differing-seat", "data-seat-id": s.seat_id },
      `seat ${s.seat_id}: actor ${s.actor ?? "—"}, postgres ${s.postgres}, redis ${s.redis ?? "—"}; order says ${s.expected}`,
    ),
  );
  const more = c.differing_seats.length - seats.length;
  return el(
    "tr",
    { class: "seat-diff", "data-testid": "differing-seats", "data-category-id": c.ticket_category_id },
    el("td", { colspan: 6 }, el("ul", { class: "seat-list" }, items, more > 0 ? el("li", { class: "muted" }, `… and ${more} more`) : null)),
  );
}
