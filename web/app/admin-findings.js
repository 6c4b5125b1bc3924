// Reconciliation findings (all programs: the API lists them server-wide; this program's rows
// are marked). Open problems can be marked handled with a note (audit-logged).

import { el } from "./api.js";
import { adminApi, section, errorLine, table, pager, selectFilter, badge, fmtTime, toast, handledByPage, query, newestOnly } from "./admin-ui.js";

const PER_PAGE = 20;
const STATUSES = [
  ["", "all"],
  ["unreconciled", "unreconciled"],
  ["reconciled_with_problem", "reconciled with problem"],
  ["reconciled_ok", "reconciled ok"],
  ["problem_handled", "problem handled"],
];
/** The statuses the server lets an operator resolve (findings::mark_handled). */
const OPEN = new Set(["unreconciled", "reconciled_with_problem"]);

export function findingsSection(scope, ctx) {
  const state = { status: "", page: 1, mineOnly: false };
  const filter = selectFilter("findings-status", "Status", STATUSES, "", (v) => {
    state.status = v;
    load(1);
  });
  const mine = el(
    "label",
    { class: "filter" },
    el("input", { type: "checkbox", id: "findings-mine", onchange: (e) => { state.mineOnly = e.target.checked; load(); } }),
    " this program only",
  );
  const refresh = el("button", { type: "button", "data-testid": "findings-refresh", onclick: () => load() }, "Refresh");
  const { node, body } = section("Reconciliation findings", "findings", [filter, mine, refresh]);
  const error = errorLine();
  const holder = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  body.append(error.node, holder);

  const start = newestOnly();

  async function load(page = state.page) {
    const current = start();
    state.page = page;
    try {
      const listing = await adminApi(`/admin/reconciliations${query({ status: state.status, page, per_page: PER_PAGE })}`);
      if (scope.closed || !current()) return;
      error.clear();
      // The API has no program filter: "this program only" narrows the page shown.
      const items = state.mineOnly ? listing.items.filter((f) => f.program_id === ctx.programId) : listing.items;
      holder.replaceChildren(
        items.length
          ? table(["#", "Kind", "Subject", "Status", "Repair", "Program", "Seen", "Details", "Action"], items.map((f) => findingRow(f, ctx, handle)), "Findings")
          : el("p", { class: "muted", "data-testid": "findings-empty" }, "No findings match."),
        pager("findings", listing, load),
      );
    } catch (e) {
      if (!scope.closed && !handledByPage(e)) error.show(e);
    }
  }

  async function handle(id, note, formError) {
    try {
      await adminApi(`/admin/reconciliations/${id}/handled`, { method: "POST", body: { note } });
      toast(`Finding #${id} marked handled`, "ok", 3000);
      await load();
    } catch (e) {
      if (!handledByPage(e)) formError.show(e);
    }
  }

  load(1);
  return { node, refresh: () => load() };
}

function findingRow(f, ctx, handle) {
  return el(
    "tr",
    {
      "data-testid": "finding",
      "data-finding-id": f.id,
      "data-status": f.status,
      "data-kind": f.kind,
      class: f.program_id === ctx.programId ? "mine" : "",
    },
    el("th", { scope: "row" }, f.id),
    el("td", { "data-field": "kind" }, f.kind),
    el("td", { "data-field": "subject", class: "mono" }, f.subject, f.order_no ? el("div", { class: "muted small" }, `order ${f.order_no}`) : null),
    el("td", { "data-field": "status" }, badge(f.status)),
    el("td", { "data-field": "repair" }, f.repair || "—"),
    el("td", {}, f.program_id ?? "—", f.ticket_category_id ? el("div", { class: "muted small" }, `cat ${f.ticket_category_id}`) : null),
    el("td", { class: "small" }, fmtTime(f.created_at), f.updated_at !== f.created_at ? el("div", { class: "muted" }, `last ${fmtTime(f.updated_at)}`) : null),
    el("td", { "data-field": "details" }, el("details", {}, el("summary", {}, "details"), el("pre", { class: "json" }, JSON.stringify(f.details, null, 2)))),
    el("td", { class: "actions" }, OPEN.has(f.status) ? handleForm(f, handle) : f.handled_note ? el("span", { class: "small" }, `note: ${f.handled_note}`) : "—"),
  );
}

/** "Mark handled" opens a note field: the server requires what was done (1–2000 chars). */
function handleForm(f, handle) {
  const error = errorLine();
  const note = el("input", { type: "text", name: "note", required: true, maxlength: 2000, placeholder: "what was done", "aria-label": `Note for finding ${f.id}`, "data-testid": "finding-note" });
  const submit = el("button", { type: "submit", "data-testid": "finding-handled-submit" }, "Save");
  const form = el(
    "form",
    {
      class: "handle-form",
      hidden: true,
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        await handle(f.id, note.value.trim(), error);
        if (submit.isConnected) submit.disabled = false;
      },
    },
    note,
    submit,
    error.node,
  );
  const open = el(
    "button",
    {
      type: "button",
      "data-testid": "finding-handled",
      "data-action": "handled",
      onclick: () => {
        form.hidden = false;
        open.hidden = true;
        note.focus();
      },
    },
    "Mark handled",
  );
  return el("div", {}, open, form);
}
