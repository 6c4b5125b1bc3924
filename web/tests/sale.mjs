// A sale in a real browser (Debian's chromium driven by playwright-core): two buyers on one
// program, one holds two seats and the other sees them turn held live, cannot take them and is
// told why; the first pays and sees "paid"; the operator sees the sale consistent and the order;
// a buyer is refused the console. Screenshots of both pages, desktop and phone size.
//
// Run by tests/api/browser.rs, which starts a server with its own database and passes:
//   BASE_URL, PROGRAM_ID, BUYER_A / BUYER_B / ADMIN ("email:password"), SCREENSHOT_DIR.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("BASE_URL");
const PROGRAM = env("PROGRAM_ID");
const SHOTS = env("SCREENSHOT_DIR");
const credentials = (name) => {
  const [email, ...rest] = env(name).split(":");
  return { email, password: rest.join(":") };
};
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 900 };

const step = (text) => console.log(`- ${text}`);

/** A page whose errors and failed requests are printed, so a failure says why. */
async function newPage(browser, name) {
  const page = await (await browser.newContext({ viewport: DESKTOP })).newPage();
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && console.log(`[${name}] console: ${m.text()}`));
  page.on("response", (r) => r.status() >= 400 && console.log(`[${name}] ${r.status()} ${r.url()}`));
  return page;
}

async function signIn(page, path, who) {
  await page.goto(`${BASE}${path}#/login`);
  await page.fill("#login-email", who.email);
  await page.fill("#login-password", who.password);
  const session = page.waitForResponse((r) => r.url().endsWith("/api/v1/sessions"));
  await page.click("#login-submit");
  assert.equal((await session).status(), 201, `${who.email} signs in`);
}

async function openProgram(page) {
  await page.goto(`${BASE}/#/programs/${PROGRAM}`);
  await page.waitForSelector('[data-seat-id][data-status="available"]');
}

const seat = (page, id) => page.locator(`[data-seat-id="${id}"]`);

async function chooseTicketBuyers(page, n) {
  const boxes = page.locator('[data-testid="ticket-buyer"]');
  await boxes.first().waitFor();
  for (let i = 0; i < n; i++) await boxes.nth(i).locator('input[type="checkbox"]').check();
}

async function shoot(page, name, viewport) {
  await page.setViewportSize(viewport);
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function buyersSale(browser) {
  const a = await newPage(browser, "A");
  const b = await newPage(browser, "B");
  await signIn(a, "/", credentials("BUYER_A"));
  await signIn(b, "/", credentials("BUYER_B"));
  await a.locator('[data-testid="whoami"]').filter({ hasText: /\S/ }).waitFor();
  await Promise.all([openProgram(a), openProgram(b)]);
  const ids = await a
    .locator('[data-seat-id][data-status="available"]')
    .evaluateAll((nodes) => nodes.slice(0, 2).map((n) => n.getAttribute("data-seat-id")));
  step(`both buyers see the map; A takes seats ${ids.join(", ")}`);

  // B wants the same two seats, but A is first.
  for (const id of ids) await seat(b, id).click();
  for (const id of ids) await seat(a, id).click();
  await chooseTicketBuyers(a, 2);
  await chooseTicketBuyers(b, 2);
  const placed = a.waitForResponse((r) => r.url().endsWith("/api/v1/orders") && r.request().method() === "POST");
  await a.click('[data-testid="place-order"]');
  const response = await placed;
  assert.equal(response.status(), 201, "A's order is placed");
  const heldAt = Date.now();
  for (const id of ids) {
    await seat(b, id).and(b.locator('[data-status="held"]')).waitFor({ timeout: 1000 });
  }
  step(`B saw both seats turn held within ${Date.now() - heldAt} ms`);

  // The live feed takes the seats out of B's selection and says so; had B's order gone out
  // first, the API's SEAT_UNAVAILABLE would say the same in the error area.
  const told = b
    .locator('[data-testid="message"], [data-testid="error"]')
    .filter({ hasText: /taken|unavailable|no longer/i });
  await told.first().waitFor({ timeout: 3000 });
  step(`B is told: "${(await told.first().innerText()).trim()}"`);
  for (const id of ids) assert.notEqual(await seat(b, id).getAttribute("data-status"), "selected");
  const bOrders = await b.evaluate(async () => {
    const r = await fetch("/api/v1/orders", {
      headers: { Authorization: `Bearer ${localStorage.getItem("boxoffice.token")}` },
    });
    return (await r.json()).items.length;
  });
  assert.equal(bOrders, 0, "B has no order");

  await shoot(b, "buyer-program-desktop", DESKTOP);
  await shoot(b, "buyer-program-phone", PHONE);
  const orderNo = (await response.json()).order_no;
  await payAndSeePaid(a, orderNo);
  return { a, b, orderNo };
}

async function payAndSeePaid(page, orderNo) {
  await page.waitForURL(/#\/orders\//, { timeout: 5000 }).catch(() => page.goto(`${BASE}/#/orders/${orderNo}`));
  const status = page.locator('[data-testid="order-status"]');
  await status.filter({ hasText: "pending_payment" }).waitFor();
  await page.locator('[data-testid="countdown"]').waitFor();
  const [checkout] = await Promise.all([page.context().waitForEvent("page"), page.click('[data-testid="pay"]')]);
  await checkout.waitForLoadState();
  await checkout.locator("button").first().click();
  step("A paid at the provider's checkout");
  await status.filter({ hasText: "paid" }).waitFor({ timeout: 10000 });
  assert.match(await status.innerText(), /^\s*paid\s*$/);
  step("A's order page shows paid, live");
  await shoot(page, "buyer-order-desktop", DESKTOP);
}

async function console_(browser, orderNo) {
  const page = await newPage(browser, "operator");
  await signIn(page, "/admin", credentials("ADMIN"));
  await page.goto(`${BASE}/admin#/programs/${PROGRAM}`);
  const rows = page.locator('[data-testid="inventory-row"]');
  await rows.first().waitFor();
  await page.waitForFunction(
    () => {
      const all = [...document.querySelectorAll('[data-testid="inventory-row"]')];
      return all.length > 0 && all.every((r) => r.getAttribute("data-consistent") === "true");
    },
    null,
    { timeout: 15000 },
  );
  step(`the console shows ${await rows.count()} tiers consistent in actor, Postgres and Redis`);
  await page.locator(`[data-testid="admin-order"][data-order-no="${orderNo}"]`).waitFor({ timeout: 10000 });
  step(`the console lists order ${orderNo}`);
  // The live section fills from /ws/admin: the program's hot tier shows with its figures.
  await page.locator('[data-testid="ws-state"][data-state="live"]').waitFor({ timeout: 5000 });
  await page.locator('[data-testid="live-category"]').first().waitFor({ timeout: 5000 });
  step("the console's live figures arrive from /ws/admin");
  await shoot(page, "console-desktop", DESKTOP);
  await shoot(page, "console-phone", PHONE);
}

async function buyerRefused(browser) {
  const page = await newPage(browser, "refused");
  await signIn(page, "/admin", credentials("BUYER_B"));
  await page.goto(`${BASE}/admin#/`);
  await page.locator('[data-testid="forbidden"]').waitFor({ timeout: 5000 });
  step("a buyer is refused the console");
}

mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const { orderNo } = await buyersSale(browser);
  await console_(browser, orderNo);
  await buyerRefused(browser);
  console.log(`screenshots in ${SHOTS}`);
} finally {
  await browser.close();
}
