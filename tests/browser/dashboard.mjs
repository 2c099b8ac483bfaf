// The dashboard in real Chromium, as an operator would use it. Run by tests/api/dashboard.rs,
// which starts the shop, makes a dead letter, drives some traffic and deploys a canary from
// the CLI when this script asks for it (a line `@berth deploy-canary` on stdout).
//
// Environment: BERTH_ADMIN_URL, BERTH_PUBLIC_URL, BERTH_ADMIN_TOKEN, BERTH_DEAD_LETTER_ID and
// BERTH_DEAD_LETTER_ORDER (a dead letter, and the order its body names), BERTH_SCREENSHOT (where to save the full-page screenshot), BERTH_CHROMIUM (default
// /usr/bin/chromium).
//
// Loopback only, every wait bounded; exits 0 when every check held, 1 with the reason
// otherwise.

import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const admin = env('BERTH_ADMIN_URL');
const publicUrl = env('BERTH_PUBLIC_URL');
const token = env('BERTH_ADMIN_TOKEN');
const deadLetterId = env('BERTH_DEAD_LETTER_ID');
const deadLetterOrder = env('BERTH_DEAD_LETTER_ORDER');
const screenshot = env('BERTH_SCREENSHOT');
const executablePath = env('BERTH_CHROMIUM', '/usr/bin/chromium');

for (const url of [admin, publicUrl]) {
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(url)) throw new Error(`not a loopback URL: ${url}`);
}

// The whole run is bounded, whatever hangs.
const WHOLE_RUN_MS = 240_000;
setTimeout(() => {
  console.error(`dashboard: FAILED: the run took more than ${WHOLE_RUN_MS / 1000} s`);
  process.exit(1);
}, WHOLE_RUN_MS).unref();

let checks = 0;
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  checks += 1;
  console.log(`ok ${checks} - ${what}`);
}

function step(name) {
  // The Rust side acts on these lines; nothing else starts with `@berth`.
  console.log(`@berth ${name}`);
}

/// Calls the public API (Node's fetch), with a timeout.
async function call(method, path, body, bearer) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const response = await fetch(`${publicUrl}${path}`, {
    method, headers, body: body && JSON.stringify(body), signal: AbortSignal.timeout(20_000),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, headers: response.headers, json, text };
}

async function eventually(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // CI runs as root, where Chromium's sandbox cannot start; the rest keep it off the network
  // (the machine's is closed, and refused connections only slow it down).
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  timeout: 60_000,
});
let failed = null;
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.setDefaultNavigationTimeout(20_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('console', (message) => {
    // A 4xx of the API shows as a failed resource load; the page handles those itself.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console: ${message.text()}`);
    }
  });

  // A wrong token is refused, with the form again and a reason.
  const first = await page.goto(`${admin}/`);
  check(first.status() === 200 && await page.locator('input#token[type=password]').count() === 1,
    'the admin listener serves a login form without a session');
  const headers = first.headers();
  check(headers['cache-control'] === 'no-store' && headers['x-frame-options'] === 'DENY'
    && headers['content-security-policy'].startsWith("default-src 'self'"),
    'the page is not cached, not framed, and runs only its own scripts');
  await page.fill('#token', 'not-the-token');
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${admin}/login`),
    page.click('button[type=submit]'),
  ]);
  check(refused.status() === 401, 'a wrong token is answered 401');
  await page.locator('p.error').waitFor();
  check((await page.locator('p.error').textContent()).includes('not the admin token'),
    'the login form says the token was wrong');

  // The right token: the dashboard, and the token nowhere the page can reach.
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${admin}/`), page.click('button[type=submit]')]);
  await page.locator('.card[data-component]').nth(3).waitFor({ timeout: 15_000 });
  const components = await page.locator('.card[data-component]')
    .evaluateAll((cards) => cards.map((c) => c.dataset.component).sort());
  check(JSON.stringify(components) === JSON.stringify(['order', 'payment', 'payment-provider', 'user']),
    `the four components are shown (${components.join(', ')})`);
  const html = await page.content();
  const storage = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  const cookies = await page.evaluate(() => document.cookie);
  check(!page.url().includes(token) && !html.includes(token) && !storage.includes(token)
    && !cookies.includes('berth_session'),
    'the token is in no URL, page or storage, and scripts cannot read the session cookie');
  const session = (await context.cookies()).find((c) => c.name === 'berth_session');
  check(session && session.httpOnly && session.sameSite === 'Strict' && session.path === '/',
    'the session cookie is HttpOnly, SameSite=Strict, Path=/');
  await page.locator('#live.up').waitFor({ timeout: 10_000 });
  check(true, 'the live stream is connected');

  // A canary deployed from the CLI shows up by itself.
  const order = page.locator('.card[data-component="order"]');
  check((await order.locator('.split-text').textContent()) === 'stable 100 %',
    'order starts with all traffic on its stable version');
  step('deploy-canary');
  await order.locator('.split-text', { hasText: 'stable 70 % · canary 30 %' })
    .waitFor({ timeout: 120_000 });
  check(await order.locator('tr.state-canary').count() === 1,
    'the canary deployed by `berth deploy --canary 30` appears with its 30 % share');

  // Roll back from the page, through the confirmation.
  await order.locator('button.rollback').click();
  await page.locator('#confirm[open]').waitFor();
  check((await page.locator('#confirm-text').textContent()).includes('Roll back order'),
    'rolling back asks for a confirmation first');
  await page.click('#confirm-ok');
  await order.locator('.split-text', { hasText: /^stable 100 %$/ }).waitFor({ timeout: 20_000 });
  await eventually('the canary row to go', 10_000,
    async () => await order.locator('tr.state-canary').count() === 0);
  check(true, 'after the roll back, the stable version takes 100 % again');

  // A dead letter: its error, its body, and a redrive.
  const letter = page.locator(`#dead-letters tr[data-id="${deadLetterId}"]`);
  await letter.waitFor({ timeout: 20_000 });
  const listed = await letter.textContent();
  check(listed.includes('order.created') && listed.includes('payment') && listed.includes('component'),
    `the dead letter is listed with its error (${listed})`);
  await letter.click();
  await page.locator('#dead-detail').waitFor({ state: 'visible' });
  check((await page.locator('#dead-body').textContent()).includes(deadLetterOrder),
    'opening the dead letter shows its body');
  await page.click('#redrive');
  await page.locator('#confirm[open]').waitFor();
  await page.click('#confirm-ok');
  await page.locator('#toast', { hasText: 'Redriven' }).waitFor({ timeout: 10_000 });
  await letter.waitFor({ state: 'detached', timeout: 15_000 });
  check(true, 'the dead letter is redriven from the page and leaves the list');

  // A saga, and its trace as a waterfall.
  const email = `dashboard-${Date.now()}@example.com`;
  const registered = await call('POST', '/api/v1/users/register',
    { email, password: 'correct horse battery', firstName: 'Grace', lastName: 'Hopper' });
  check(registered.status === 201, `a shopper registers (${registered.status})`);
  const login = await call('POST', '/api/v1/users/login', { email, password: 'correct horse battery' });
  const placed = await call('POST', '/api/v1/orders', {
    items: [{ productId: 'book-1', quantity: 2, unitPriceCents: 1999 }],
    currency: 'USD',
    paymentMethodId: 'pm_card_visa',
    shippingAddress: { street: '1 Main St', city: 'Springfield', state: 'IL', zipCode: '62701', country: 'US' },
  }, login.json.token);
  check(placed.status === 201, `an order is placed (${placed.status})`);
  const traceId = (placed.headers.get('traceparent') || '').split('-')[1];
  check(/^[0-9a-f]{32}$/.test(traceId || ''), `the order's answer names its trace (${traceId})`);
  await eventually('the order to be confirmed', 30_000, async () => {
    const got = await call('GET', `/api/v1/orders/${placed.json.id}`, null, login.json.token);
    return got.json && got.json.status === 'confirmed';
  });
  check(true, 'the saga confirmed the order');

  // The charts' traffic makes many one-service traces; the saga is across services.
  await page.check('#traces-across');
  const row = page.locator(`#traces tr[data-trace="${traceId}"]`);
  await eventually('the trace in the list', 30_000, async () => {
    if (await row.count() > 0) return true;
    await page.click('#traces-refresh');
    return false;
  });
  await row.click();
  await page.locator('#waterfall').waitFor({ state: 'visible' });
  await page.locator('#waterfall .span-row').nth(2).waitFor();
  const services = await page.locator('#waterfall .span-row')
    .evaluateAll((rows) => [...new Set(rows.map((r) => r.dataset.service))]);
  check(['order', 'payment', 'payment-provider'].every((s) => services.includes(s)),
    `the saga's trace reads as one waterfall across services (${services.join(', ')})`);
  await page.locator('#waterfall .span-row').first().click();
  await page.locator('#span-detail').waitFor({ state: 'visible' });
  check(true, 'a span opens with its attributes');

  // For the README: a canary taking its share of the traffic, the charts drawn, no message
  // in front of them.
  step('deploy-canary');
  await order.locator('.split-text', { hasText: 'stable 70 % · canary 30 %' })
    .waitFor({ timeout: 120_000 });
  await page.waitForTimeout(3_000);
  await page.locator('.card[data-component="order"] tr.state-canary polyline').first().waitFor();
  await page.evaluate(() => { document.getElementById('toast').className = ''; window.scrollTo(0, 0); });
  await page.waitForTimeout(300);
  await page.screenshot({ path: screenshot, fullPage: true });
  check(true, `the screenshot is saved to ${screenshot}`);

  check(problems.length === 0, `no script error or refused content (${problems.join('; ')})`);
} catch (e) {
  failed = e;
} finally {
  await browser.close().catch(() => {});
}
if (failed) {
  console.error(`dashboard: FAILED after ${checks} checks: ${failed.stack || failed}`);
  process.exit(1);
}
console.log(`dashboard: ${checks} passed, 0 failed`);
