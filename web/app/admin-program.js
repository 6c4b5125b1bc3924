// Page "#/programs/ID": one program seen from every side. Each section lives in its own module
// and gets the scope (to stop its timers and socket on leaving) and a shared context.

import { api, el } from "./api.js";
import { errorLine } from "./admin-ui.js";
import { inventorySection } from "./admin-inventory.js";
import { liveSection } from "./admin-live.js";
import { ordersSection, discardedSection } from "./admin-orders.js";
import { mqSection } from "./admin-mq.js";
import { findingsSection } from "./admin-findings.js";

export async function renderProgram(root, scope, programId) {
  const error = errorLine();
  const title = el("h1", { class: "page-title", "data-testid": "program-title" }, `Program ${programId}`);
  const subtitle = el("p", { class: "muted" });
  root.replaceChildren(
    el("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, el("a", { href: "#/" }, "‹ All programs")),
    title,
    subtitle,
    error.node,
  );

  // The public detail gives category names and show times; the sections work without it.
  const ctx = { programId, categoryNames: new Map(), refreshFindings: () => {}, refreshInventory: () => {} };
  try {
    const detail = await api(`/programs/${programId}`);
    if (scope.closed) return;
    title.textContent = detail.title;
    subtitle.textContent = [detail.venue, `program ${programId}`, `${(detail.show_times || []).length} show time(s)`]
      .filter(Boolean)
      .join(" · ");
    const times = new Map((detail.show_times || []).map((s) => [s.id, s.starts_at]));
    for (const c of detail.ticket_categories || []) {
      // With several show times every tier exists once per show time: name them apart.
      const when = times.size > 1 && times.get(c.show_time_id) ? ` (${new Date(times.get(c.show_time_id)).toLocaleDateString()})` : "";
      ctx.categoryNames.set(c.id, `${c.name}${when}`);
    }
  } catch (e) {
    if (scope.closed) return;
    error.show(e); // e.g. not found; the admin sections below say the same in their own words
  }

  const layout = el("div", { class: "program-grid" });
  root.append(layout);
  const findings = findingsSection(scope, ctx);
  ctx.refreshFindings = findings.refresh;
  const inventory = inventorySection(scope, ctx);
  ctx.refreshInventory = inventory.refresh;
  layout.append(
    inventory.node,
    liveSection(scope, ctx).node,
    ordersSection(scope, ctx).node,
    discardedSection(scope, ctx).node,
    mqSection(scope, ctx).node,
    findings.node,
  );
}

