// The program list (#/): search and area/category filters. The filters live in the hash query
// (#/?q=…&area=…&category=…&page=…) so reload, back and shared links keep them.

import { api, el, money } from "./api.js";
import { append, hashQuery, when } from "./buyer-ui.js";

const PER_PAGE = 24;
/** Area and category names seen in the unfiltered list, for the filter menus (no endpoint lists them). */
let facets = null;

async function loadFacets() {
  if (facets) return facets;
  const all = await api("/programs?per_page=100");
  const pick = (k) => [...new Set(all.items.map((p) => p[k]).filter(Boolean))].sort();
  facets = { area: pick("area"), category: pick("category") };
  return facets;
}

function select(id, label, values, current) {
  const s = el("select", { id, name: id.replace("filter-", "") },
    el("option", { value: "" }, `Any ${label.toLowerCase()}`),
    values.map((v) => el("option", { value: v, selected: v === current }, v)));
  return el("label", { class: "field" }, el("span", {}, label), s);
}

function priceRange(p) {
  if (p.min_price_cents == null) return "";
  if (p.min_price_cents === p.max_price_cents) return money(p.min_price_cents);
  return `${money(p.min_price_cents)} – ${money(p.max_price_cents)}`;
}

function card(p) {
  return el("li", { class: "program-card", "data-testid": "program-card", "data-program-id": p.id },
    el("a", { href: `#/programs/${p.id}`, class: "card-link" },
      el("h2", {}, p.title),
      el("p", { class: "meta" }, [p.venue, p.area, p.category].filter(Boolean).join(" · ")),
      el("p", { class: "meta" }, when(p.first_show_at)),
      el("p", { class: "price" }, priceRange(p)),
      el("p", { class: p.remaining > 0 ? "remaining" : "remaining none" },
        p.remaining > 0 ? `${p.remaining} left` : "Sold out"),
    ),
  );
}

function pager(page, total) {
  const pages = Math.max(1, Math.ceil(total / PER_PAGE));
  if (pages === 1) return null;
  const link = (n, text) => {
    const q = hashQuery();
    q.set("page", n);
    return el("a", { href: `#/?${q}`, class: "button" }, text);
  };
  return el("nav", { class: "pager", "aria-label": "Pages" },
    page > 1 ? link(page - 1, "← Previous") : null,
    el("span", {}, `Page ${page} of ${pages}`),
    page < pages ? link(page + 1, "Next →") : null);
}

/** The API query: only the filters that are set (an empty `area=` would match nothing). */
function listQuery(q, page) {
  const out = new URLSearchParams({ page, per_page: PER_PAGE });
  for (const k of ["q", "area", "category"]) if (q.get(k)) out.set(k, q.get(k));
  return out;
}

export async function renderProgramList(root, _params, stale) {
  const q = hashQuery();
  const page = Math.max(1, Number(q.get("page")) || 1);
  const [f, list] = await Promise.all([
    loadFacets(),
    api(`/programs?${listQuery(q, page)}`),
  ]);
  if (stale()) return;

  const search = el("input", { id: "search", type: "search", name: "q", value: q.get("q") || "", placeholder: "Title, venue…" });
  const form = el("form", { class: "filters", role: "search" },
    el("label", { class: "field grow" }, el("span", {}, "Search"), search),
    select("filter-area", "Area", f.area, q.get("area") || ""),
    select("filter-category", "Category", f.category, q.get("category") || ""),
    el("button", { type: "submit", id: "search-submit" }, "Search"));
  // Submitting (or changing a menu) rewrites the hash; the router redraws from it.
  const apply = () => {
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) next.set(k, String(v).trim());
    location.hash = `#/?${next}`;
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    apply();
  });
  form.querySelectorAll("select").forEach((s) => s.addEventListener("change", apply));

  append(root,
    el("h1", {}, "Programs"),
    form,
    el("p", { class: "hint", "data-testid": "program-count" }, `${list.total} program${list.total === 1 ? "" : "s"}`),
    list.items.length
      ? el("ul", { class: "program-grid" }, list.items.map(card))
      : el("p", { class: "empty" }, "Nothing matches. Try fewer filters."),
    pager(list.page || page, list.total),
  );
}
