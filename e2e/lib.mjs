// What the browser scenarios share: the server under test (BASE_URL), the mailbox, Chromium,
// screenshots and accessibility checks, and the sign-up / sign-in steps every scenario takes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
export const BASE = process.env.BASE_URL ?? 'http://127.0.0.1:8080';
export const OUT = process.env.OUT_DIR ?? 'target/web-e2e';
// The server's data directory, and the mailbox: the messages a real SMTP server on 127.0.0.1
// received from the server (MAIL_DIR), or without one the .eml files the server writes to
// DATA/mail.
export const DATA = process.env.DATA_DIR ?? 'tessera-data';
export const MAIL = process.env.MAIL_DIR ?? path.join(DATA, 'mail');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
export const PASSWORD = 'correct horse battery staple 42';
mkdirSync(OUT, { recursive: true });

export const steps = [];
export function step(name) {
  steps.push(name);
  console.log(`  - ${name}`);
}

/// A TOTP code for `secret` at now + offset seconds, from oathtool.
export function totp(secret, offset = 0) {
  const at = Math.floor(Date.now() / 1000) + offset;
  return execFileSync('oathtool', ['--totp', '-b', secret, '-N', `@${at}`], { encoding: 'utf8' }).trim();
}

/// A code that is not the current one nor its neighbours.
export function wrongCode(secret) {
  const near = new Set([-30, 0, 30, 60].map((o) => totp(secret, o)));
  let c = (Number(totp(secret)) + 500000) % 1000000;
  while (near.has(String(c).padStart(6, '0'))) c = (c + 1) % 1000000;
  return String(c).padStart(6, '0');
}

/// The newest mail to `email` whose subject contains `subject`, as text: read from the mailbox
/// (MAIL, above), waiting up to 20 s for it.
export function mailTo(email, subject) {
  // The address must match exactly: "ada@example.com" is a substring of "dana@example.com".
  const py = 'import sys, os, glob, time, email, email.policy, email.utils\n' +
    'd, to, subj = sys.argv[1], sys.argv[2].lower(), sys.argv[3]\n' +
    'for _ in range(200):\n' +
    '    found = []\n' +
    '    for p in glob.glob(os.path.join(d, "*.eml")):\n' +
    '        m = email.message_from_binary_file(open(p, "rb"), policy=email.policy.default)\n' +
    '        rcpt = [a.lower() for _, a in email.utils.getaddresses([str(m["To"])])]\n' +
    '        if to in rcpt and subj in str(m["Subject"]):\n' +
    '            found.append((os.path.getmtime(p), m.get_body(("plain",)).get_content()))\n' +
    '    if found:\n' +
    '        print(sorted(found)[-1][1]); break\n' +
    '    time.sleep(0.1)\n';
  return execFileSync('python3', ['-c', py, MAIL, email, subject], { encoding: 'utf8' });
}

/// The code in the newest invitation mail to `email`.
export function invitationCode(email) {
  const m = mailTo(email, 'You are invited').match(/^ {4}(\S+)$/m);
  return m ? m[1] : '';
}

/// Decode a QR code image with zxing-cpp.
export function decodeQr(png) {
  const py = 'import sys, zxingcpp; from PIL import Image\n' +
    'r = zxingcpp.read_barcodes(Image.open(sys.argv[1]))\n' +
    'print(r[0].text if r else "")';
  return execFileSync('python3', ['-c', py, png], { encoding: 'utf8' }).trim();
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
}

/// axe-core in the page: no serious or critical violations.
export async function accessible(page, name) {
  await page.evaluate(AXE);
  const r = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`),
    [],
    `accessibility of ${name}`,
  );
  return r.violations.length;
}

/// Collect what would show a broken page: CSP refusals, script errors, missing styles or scripts.
/// (A form answered with 401 or 400 on purpose logs "Failed to load resource": not a problem.)
export function watch(page, problems) {
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('response', (r) => {
    if (['stylesheet', 'script', 'image', 'font'].includes(r.request().resourceType()) && r.status() >= 400) {
      problems.push(`${r.status()} ${r.url()}`);
    }
  });
}

export const VERIFY_LINK = /(https?:\/\/\S+\/verify-email\?token=[A-Za-z0-9_-]{43})/;
export const EMAIL_CHANGE_LINK = /(https?:\/\/\S+\/settings\/email\/confirm\?token=[A-Za-z0-9_-]{43})/;

/// The link matching `re` in the newest mail to `email` about `subject`, on BASE (like the reset
/// link below: its path and query on the server under test).
export function linkIn(email, subject, re) {
  const mail = mailTo(email, subject);
  const m = mail.match(re);
  assert.ok(m, `a link in the mail "${subject}" to ${email}: ${mail}`);
  const u = new URL(m[1]);
  return `${BASE}${u.pathname}${u.search}`;
}

/// Click "Create account" on the filled sign-up form: every acceptable sign-up gets the same
/// 200 "Check your email" page. Returns the text of its main part.
export async function createAccount(page) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${BASE}/signup` && r.request().method() === 'POST'),
    page.click('button[type=submit]:text("Create account")'),
  ]);
  assert.equal(resp.status(), 200, 'sign-up answers 200');
  await page.locator('main h1', { hasText: 'Check your email' }).waitFor();
  assert.equal((await page.textContent('main h1')).trim(), 'Check your email');
  return (await page.textContent('main')).trim();
}

/// Confirm `email` with the link from its sign-up mail (and the password chosen at sign-up, which
/// the link's page asks for), then sign in with the password: a user without a factor lands on
/// /accounts. Returns the (now used) link.
export async function verifyAndSignIn(page, email, password = PASSWORD) {
  const link = linkIn(email, 'Confirm your email address', VERIFY_LINK);
  await page.goto(link);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${BASE}/login?verified=1`), page.click('button:text("Confirm my email address")')]);
  assert.match(await page.textContent('.notice'), /Your email address is confirmed\. Sign in with your password\./);
  await page.fill('#email', email);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${BASE}/accounts`), page.click('button:text("Sign in")')]);
  return link;
}

/// A new user with PASSWORD, signed in (on /accounts): sign-up (which signs nobody in), the
/// link from the mail, then the sign-in form.
export async function newUser(browser, email, contextOptions = {}) {
  const context = await browser.newContext({ acceptDownloads: true, ...contextOptions });
  const page = await context.newPage();
  const problems = [];
  watch(page, problems);
  await page.goto(`${BASE}/signup`);
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await createAccount(page);
  assert.equal(
    (await context.cookies()).find((c) => c.name === '__Host-tessera_session'),
    undefined,
    'sign-up sets no session cookie',
  );
  await verifyAndSignIn(page, email);
  return { context, page, problems, email };
}

/// Set up an authenticator from the security page; returns the secret and the recovery codes.
/// When the session has not proven the password recently, the page asks for it first
/// (/settings/reauth) and comes back.
export async function enrolTotp(page, screenshots = false) {
  await page.goto(`${BASE}/settings/security`);
  await page.click('text=Set up two-factor authentication');
  await page.waitForURL(/\/settings\/(security\/totp\/|reauth)/);
  if (page.url().includes('/settings/reauth')) {
    await page.fill('#password', PASSWORD);
    await Promise.all([page.waitForURL(`${BASE}/settings/security`), page.click('#reauth-password button')]);
    await page.click('text=Set up two-factor authentication');
    await page.waitForURL(/\/settings\/security\/totp\//);
  }
  const resp = await page.reload();
  assert.equal(resp.headers()['cache-control'], 'no-store', 'the page with the secret is not cached');
  const secret = (await page.textContent('#secret')).replace(/\s+/g, '');
  assert.match(secret, /^[A-Z2-7]{32}$/, 'the manual key is base32');
  const qrPng = path.join(OUT, `qr-${Date.now()}.png`);
  await page.locator('#qr').screenshot({ path: qrPng });
  const uri = decodeQr(qrPng);
  const u = new URL(uri);
  assert.equal(u.protocol, 'otpauth:');
  assert.equal(u.host, 'totp');
  assert.equal(u.searchParams.get('secret'), secret, 'the QR code carries the manual key');
  assert.equal(u.searchParams.get('issuer'), 'Tessera');
  const account = (await page.textContent('#manual-account')).trim();
  assert.equal(decodeURIComponent(u.pathname.replace(/^\//, '')), account.replace(': ', ':'), 'the QR label is the account shown');
  if (screenshots) {
    await shot(page, '03-setup-qr');
    await accessible(page, 'setup');
  }
  await page.fill('#code', totp(secret));
  await page.click('button:text("Turn on two-factor authentication")');
  await page.waitForSelector('#recovery-codes');
  const codes = (await page.locator('#recovery-codes code').allTextContents()).map((c) => c.trim());
  assert.equal(codes.length, 10, 'ten recovery codes are shown');
  for (const c of codes) assert.match(c, /^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$/);
  return { secret, codes, uri };
}

export async function logout(page) {
  await Promise.all([page.waitForURL(`${BASE}/login`), page.click('nav button:has-text("Sign out")')]);
}

export async function login(page, email) {
  await page.goto(`${BASE}/login`);
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await page.click('button:text("Sign in")');
}

/// Debian's Chromium, headless.
export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}
