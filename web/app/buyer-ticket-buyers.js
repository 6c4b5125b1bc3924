// The signed-in buyer's ticket buyers (real-name holders, one per ticket): a checkbox list and
// an "add" form. Names and id numbers come back masked; the list is all the UI needs.

import { api, el } from "./api.js";
import { clearError, showError, showMessage } from "./buyer-ui.js";

/** Document kinds the server accepts (src/domain/identity.rs ID_TYPES), with people's names. */
const ID_TYPES = [
  ["id_card", "Resident ID card (18 characters)"],
  ["passport", "Passport (5–20 letters/digits)"],
  ["hk_macau_permit", "HK/Macau permit (H or M + 8 or 10 digits)"],
  ["taiwan_permit", "Taiwan permit (8 or 10 digits)"],
];

/**
 * Draws the section into `box`; `onChange()` is called when the checked set changes.
 * Returns {checkedIds()}.
 */
export function ticketBuyersSection(box, onChange) {
  const checked = new Set();
  const list = el("ul", { class: "ticket-buyers", "data-testid": "ticket-buyer-list" });

  async function reload(alsoCheck) {
    const { items } = await api("/me/ticket-buyers");
    if (alsoCheck) checked.add(alsoCheck);
    const known = new Set(items.map((b) => b.id));
    for (const id of [...checked]) if (!known.has(id)) checked.delete(id);
    list.replaceChildren(...items.map(row));
    if (!items.length) list.append(el("li", { class: "empty" }, "No ticket buyers yet — add one below."));
    onChange();
  }

  function row(b) {
    const box = el("input", { type: "checkbox", value: b.id, checked: checked.has(b.id), id: `tb-${b.id}` });
    box.addEventListener("change", () => {
      if (box.checked) checked.add(b.id);
      else checked.delete(b.id);
      onChange();
    });
    return el("li", { "data-testid": "ticket-buyer", "data-ticket-buyer-id": b.id },
      el("label", { for: `tb-${b.id}` }, box, ` ${b.name_masked} `,
        el("span", { class: "meta" }, `${b.id_type} ${b.id_number_masked}`)));
  }

  box.append(
    el("h2", {}, "Ticket buyers"),
    el("p", { class: "hint" }, "Each ticket is issued to one person: tick one ticket buyer per ticket."),
    list,
    addForm((id) => reload(id)),
  );
  reload().catch(showError);
  return { checkedIds: () => [...checked] };
}

function addForm(added) {
  const name = el("input", { id: "tb-name", required: true, maxlength: 64, autocomplete: "name" });
  const type = el("select", { id: "tb-id-type" }, ID_TYPES.map(([v, text]) => el("option", { value: v }, text)));
  const number = el("input", { id: "tb-id-number", required: true, autocomplete: "off" });
  const submit = el("button", { type: "submit", id: "tb-submit" }, "Add ticket buyer");
  const form = el("form", { class: "add-buyer", "data-testid": "add-ticket-buyer" },
    el("h3", {}, "Add a ticket buyer"),
    el("label", { class: "field" }, el("span", {}, "Full name"), name),
    el("label", { class: "field" }, el("span", {}, "Document"), type),
    el("label", { class: "field" }, el("span", {}, "Document number"), number),
    submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    submit.disabled = true;
    clearError();
    try {
      const b = await api("/me/ticket-buyers", {
        method: "POST",
        body: { name: name.value.trim(), id_type: type.value, id_number: number.value.trim() },
      });
      form.reset();
      showMessage("Ticket buyer added.");
      await added(b.id);
    } catch (e) {
      showError(e);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
