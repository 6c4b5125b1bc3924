// Page "#/": the program list (public catalog) and the "create program" form.

import { api, money, el } from "./api.js";
import { adminApi, errorLine, section, table, pager, fmtTime, toast, handledByPage, query, newestOnly } from "./admin-ui.js";

/** Draws the list and the form into `root`. */
export function renderProgramList(root, scope) {
  const list = section("All programs", "program-list", [
    el("button", { type: "button", "data-testid": "programs-refresh", onclick: () => load(1) }, "Refresh"),
  ]);
  const error = errorLine();
  list.body.append(error.node);
  const holder = el("div");
  list.body.append(holder);

  let page = 1;
  const start = newestOnly();
  async function load(p = page) {
    const current = start();
    page = p;
    try {
      const listing = await api(`/programs${query({ page, per_page: 50 })}`);
      if (scope.closed || !current()) return;
      error.clear();
      holder.replaceChildren(programTable(listing.items), pager("programs", listing, load));
    } catch (e) {
      if (!scope.closed) error.show(e);
    }
  }

  const create = createForm(() => load(1));
  root.replaceChildren(el("h1", { class: "page-title" }, "Programs"), el("div", { class: "stack" }, list.node, create));
  load(1);
}

function programTable(items) {
  if (!items.length) return el("p", { class: "muted" }, "No programs yet.");
  const rows = items.map((p) =>
    el(
      "tr",
      { "data-testid": "admin-program", "data-program-id": p.id },
      el("td", {}, el("a", { href: `#/programs/${p.id}`, "data-testid": "admin-program-link" }, p.title)),
      el("td", {}, p.venue),
      el("td", {}, [p.area, p.category].filter(Boolean).join(" · ")),
      el("td", {}, fmtTime(p.first_show_at)),
      el("td", { class: "num" }, p.min_price_cents === p.max_price_cents ? money(p.min_price_cents) : `${money(p.min_price_cents)}–${money(p.max_price_cents)}`),
      el("td", { class: "num" }, p.remaining ?? "—"),
    ),
  );
  return table(["Title", "Venue", "Area · category", "First show", "Price", "Remaining"], rows, "Programs");
}

// ---- create program ----

/** A datetime-local value for `date` (local time, minutes). */
function localInput(date) {
  const d = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function field(label, input) {
  return el("label", { class: "field" }, el("span", {}, label), input);
}

/** One show time line: a datetime input and a remove button. */
function showTimeLine(value) {
  const line = el(
    "div",
    { class: "repeat-line", "data-testid": "new-show-time" },
    el("input", { type: "datetime-local", name: "show_time", value, required: true, "aria-label": "Show time" }),
    el("button", { type: "button", class: "link", onclick: () => line.remove(), "aria-label": "Remove show time" }, "Remove"),
  );
  return line;
}

/** One tier line: name, price, and rows × seats per row or a general-admission capacity. */
function tierLine(name = "", price = "", seated = true) {
  const layout = el(
    "select",
    { name: "layout", "aria-label": "Layout", onchange: () => toggle() },
    el("option", { value: "seated", selected: seated }, "Seated (rows × seats)"),
    el("option", { value: "general", selected: !seated }, "General admission"),
  );
  const rows = el("input", { type: "number", name: "rows", min: 1, max: 1000, value: 10, "aria-label": "Rows" });
  const perRow = el("input", { type: "number", name: "seats_per_row", min: 1, max: 1000, value: 20, "aria-label": "Seats per row" });
  const capacity = el("input", { type: "number", name: "capacity", min: 1, value: 500, "aria-label": "Capacity" });
  const seatedBox = el("span", { class: "inline" }, field("Rows", rows), field("Seats/row", perRow));
  const gaBox = el("span", { class: "inline" }, field("Capacity", capacity));
  function toggle() {
    const isSeated = layout.value === "seated";
    seatedBox.hidden = !isSeated;
    gaBox.hidden = isSeated;
  }
  const line = el(
    "div",
    { class: "repeat-line tier-line", "data-testid": "new-tier" },
    field("Name", el("input", { name: "tier_name", value: name, required: true })),
    field("Price", el("input", { name: "price", type: "number", min: 0, step: "0.01", value: price, required: true })),
    field("Layout", layout),
    seatedBox,
    gaBox,
    el("button", { type: "button", class: "link", onclick: () => line.remove(), "aria-label": "Remove tier" }, "Remove"),
  );
  toggle();
  return line;
}

/** The tier lines as the API's NewTier objects (price typed in major units → cents). */
function tiersOf(box) {
  return [...box.querySelectorAll(".tier-line")].map((line) => {
    const v = (n) => line.querySelector(`[name=${n}]`).value;
    const tier = { name: v("tier_name").trim(), price_cents: Math.round(Number(v("price")) * 100) };
    if (v("layout") === "seated") {
      tier.rows = Number(v("rows"));
      tier.seats_per_row = Number(v("seats_per_row"));
    } else {
      tier.capacity = Number(v("capacity"));
    }
    return tier;
  });
}

function createForm(onCreated) {
  const { node, body } = section("Create program", "create-program");
  const error = errorLine();
  const week = new Date(Date.now() + 7 * 86400000);
  week.setHours(19, 30, 0, 0);
  const showTimes = el("div", { class: "repeat" }, showTimeLine(localInput(week)));
  const tiers = el("div", { class: "repeat" }, tierLine("Floor", "480", true), tierLine("Standing", "280", false));
  const done = el("p", { class: "ok", hidden: true, "data-testid": "create-program-done" });

  const form = el(
    "form",
    { id: "create-program-form", class: "create-form", onsubmit: (e) => submit(e) },
    el(
      "div",
      { class: "grid" },
      field("Title", el("input", { name: "title", id: "new-title", required: true })),
      field("Venue", el("input", { name: "venue", id: "new-venue", required: true })),
      field("Area (city)", el("input", { name: "area", id: "new-area", required: true })),
      field("Category", el("input", { name: "category", id: "new-category", required: true, placeholder: "e.g. concert" })),
      field("Per-order limit", el("input", { name: "per_order_limit", id: "new-per-order", type: "number", min: 1, value: 4, required: true })),
      field("Per-account limit", el("input", { name: "per_account_limit", id: "new-per-account", type: "number", min: 1, value: 6, required: true })),
      field("On sale at", el("input", { name: "on_sale_at", id: "new-on-sale", type: "datetime-local", value: localInput(new Date()), required: true })),
      el("label", { class: "field check" }, el("input", { type: "checkbox", name: "choose_seats", checked: true }), el("span", {}, "Buyers choose seats")),
    ),
    field("Description", el("textarea", { name: "description", rows: 2 })),
    el("fieldset", {}, el("legend", {}, "Show times"), showTimes,
      el("button", { type: "button", onclick: () => showTimes.append(showTimeLine(localInput(week))) }, "+ Show time")),
    el("fieldset", {}, el("legend", {}, "Ticket categories (created for every show time)"), tiers,
      el("button", { type: "button", onclick: () => tiers.append(tierLine()) }, "+ Tier")),
    error.node,
    done,
    el("button", { type: "submit", class: "primary", id: "create-program-submit" }, "Create program"),
  );
  body.append(form);

  async function submit(event) {
    event.preventDefault();
    error.clear();
    done.hidden = true;
    const button = form.querySelector("#create-program-submit");
    button.disabled = true;
    try {
      const created = await adminApi("/admin/programs", { method: "POST", body: bodyOf(form.elements) });
      done.replaceChildren(`Created “${created.title}”. `, el("a", { href: `#/programs/${created.id}` }, "Open it"));
      done.hidden = false;
      toast(`Program ${created.id} created`, "ok");
      onCreated();
    } catch (e) {
      if (!handledByPage(e)) error.show(e);
    } finally {
      button.disabled = false;
    }
  }

  /** The CreateProgram body (src/http/admin.rs); throws on a date the browser let through empty. */
  function bodyOf(f) {
    return {
      title: f.title.value.trim(),
      venue: f.venue.value.trim(),
      area: f.area.value.trim(),
      category: f.category.value.trim(),
      description: f.description.value.trim(),
      choose_seats: f.choose_seats.checked,
      per_order_limit: Number(f.per_order_limit.value),
      per_account_limit: Number(f.per_account_limit.value),
      on_sale_at: new Date(f.on_sale_at.value).toISOString(),
      show_times: [...showTimes.querySelectorAll("input")].map((i) => new Date(i.value).toISOString()),
      ticket_categories: tiersOf(tiers),
    };
  }
  return node;
}
