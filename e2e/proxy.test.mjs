// Forward auth for real: an app behind a real reverse proxy (Debian's nginx with `auth_request`,
// or Debian's Caddy with `forward_auth` and `tls internal`), configured from examples/, in front
// of an upstream that echoes the request it received as JSON. Started by
// crates/tessera/tests/proxy.rs, which runs the proxy, the echo app and `tessera serve`.
//
// MODE=nginx: Tessera and the app on one host (http://localhost, two ports): the pages' own
//   __Host- session cookie reaches the proxy. Also an account that requires MFA (a second
//   server block, for `&account=`, written once the account exists, then `nginx -s reload`).
// MODE=caddy: https://auth.tessera.test and https://app.tessera.test through one Caddy, the made-up
//   domain resolved by Chromium's --host-resolver-rules: only the domain-wide cookie
//   (--cookie-domain tessera.test) crosses from the sign-in to the app.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { BASE, enrolTotp, invitationCode, launch, newUser, shot, step, steps, totp, PASSWORD } from './lib.mjs';

const MODE = process.env.MODE ?? 'nginx';
const APP = process.env.APP_URL; // the app through the proxy, e.g. http://localhost:8081
assert.ok(APP, 'APP_URL');
const caddy = MODE === 'caddy';
const launchArgs = caddy ? ['--host-resolver-rules=MAP *.tessera.test 127.0.0.1', '--ignore-certificate-errors'] : [];
const contextOptions = caddy ? { ignoreHTTPSErrors: true } : {};

/// What the echo app saw (its page is the request as JSON), after visiting `url`.
async function visit(page, url) {
  const resp = await page.goto(url);
  return { resp, url: page.url() };
}
async function echoed(page) {
  const text = await page.textContent('body');
  return JSON.parse(text);
}
/// The value of header `name` (lower case) in what the echo app saw.
function header(seen, name) {
  return seen.headers[name];
}

/// A code for `secret` that has not been used yet: each step is accepted once, and the window
/// reaches one step ahead, so at most one step ahead of now (waiting for the clock if needed).
const lastStep = new Map();
const stepNow = () => Math.floor(Date.now() / 1000 / 30);
function used(secret) {
  lastStep.set(secret, stepNow());
}
async function unusedCode(secret) {
  const target = Math.max(stepNow(), (lastStep.get(secret) ?? -1) + 1);
  while (target > stepNow() + 1) await new Promise((r) => setTimeout(r, 500));
  lastStep.set(secret, target);
  return totp(secret, target * 30 + 15 - Math.floor(Date.now() / 1000));
}

/// Sign in on Tessera's login page (where the proxy sent the browser) with the password, then a
/// code: back at `target`.
async function signInThroughProxy(page, email, secret, target) {
  await page.waitForSelector('#email');
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await Promise.all([page.waitForURL(/\/login\/code$/), page.click('button:text("Sign in")')]);
  await page.fill('#code', await unusedCode(secret));
  await Promise.all([page.waitForURL(target), page.click('button:text("Verify")')]);
}

const browser = await launch(launchArgs);
try {
  // --- signed out → Tessera's sign-in → back to the original URL ---------------------------------
  const ann = await newUser(browser, 'ann@example.com', contextOptions);
  const { secret } = await enrolTotp(ann.page);
  used(secret);
  await Promise.all([ann.page.waitForURL(/\/login$/), ann.page.click('nav button:has-text("Sign out")')]);
  // The app's own cookie, beside Tessera's: it must reach the app, and Tessera's must not.
  await ann.context.addCookies([{ name: 'theme', value: 'dark', url: APP }]);
  const target = `${APP}/private/page?x=1&y=two`;
  const first = await visit(ann.page, target);
  assert.ok(first.url.startsWith(`${BASE}/login?rd=`), `sent to the sign-in: ${first.url}`);
  assert.equal(new URL(first.url).searchParams.get('rd'), target, 'rd is the original URL');
  await shot(ann.page, `30-${MODE}-login-for-app`);
  await signInThroughProxy(ann.page, 'ann@example.com', secret, target);
  let seen = await echoed(ann.page);
  assert.equal(seen.path, '/private/page?x=1&y=two', 'the app got the original request');
  assert.match(header(seen, 'x-tessera-user'), /^[0-9a-f-]{36}$/, 'the app sees who it is');
  assert.equal(header(seen, 'x-tessera-email'), 'ann@example.com');
  assert.equal(header(seen, 'x-tessera-level'), 'second_factor');
  assert.equal(header(seen, 'cookie'), 'theme=dark', 'the app gets its own cookie, and no Tessera cookie');
  assert.match(header(seen, 'x-tessera-session-age'), /^\d+$/);
  const annUser = header(seen, 'x-tessera-user');
  await shot(ann.page, `31-${MODE}-app`);
  step(`${MODE}: signed out → Tessera's sign-in (password + code) → back at the original URL; the app sees X-Tessera-User`);

  // --- a client cannot forge who it is -------------------------------------------------------------
  await ann.page.setExtraHTTPHeaders({
    'X-Tessera-User': 'forged-admin',
    'X-Tessera-Level': 'password',
    'X-Tessera-Grace-Until': '2099-01-01T00:00:00Z',
  });
  await visit(ann.page, `${APP}/again`);
  seen = await echoed(ann.page);
  assert.equal(header(seen, 'x-tessera-user'), annUser, 'the forged header is replaced');
  assert.equal(header(seen, 'x-tessera-level'), 'second_factor');
  assert.equal(header(seen, 'x-tessera-grace-until') ?? '', '', 'no grace period: the forged one never reaches the app');
  const stranger = await browser.newContext(contextOptions);
  const sp = await stranger.newPage();
  await sp.setExtraHTTPHeaders({ 'X-Tessera-User': annUser });
  const s = await visit(sp, `${APP}/private`);
  assert.ok(s.url.startsWith(`${BASE}/login`), `a stranger naming Ann is sent to sign in: ${s.url}`);
  await stranger.close();
  await ann.page.setExtraHTTPHeaders({});
  step(`${MODE}: a forged X-Tessera-User is replaced; a stranger naming a user is sent to sign in`);

  // --- sign out everywhere, or a factor removed → the next request through the proxy is refused --
  const annPhone = await ann.context.newPage(); // a second tab, same browser: same session
  await annPhone.goto(`${BASE}/settings/security`);
  // Remove the device (a sensitive action: the session proved its code just now).
  await annPhone.click('#devices button:has-text("Remove")');
  await annPhone.waitForURL(/\/settings\/security/);
  const afterRemoval = await visit(ann.page, `${APP}/private`);
  assert.ok(afterRemoval.url.startsWith(`${BASE}/login`), `refused once the factor is gone: ${afterRemoval.url}`);
  step(`${MODE}: a factor removed → the next request through the proxy is refused`);
  await annPhone.close();

  const ben = await newUser(browser, 'ben@example.com', contextOptions);
  const benTotp = await enrolTotp(ben.page);
  used(benTotp.secret);
  await Promise.all([ben.page.waitForURL(/\/login$/), ben.page.click('nav button:has-text("Sign out")')]);
  await visit(ben.page, `${APP}/private`);
  await signInThroughProxy(ben.page, 'ben@example.com', benTotp.secret, `${APP}/private`);
  assert.equal(header(await echoed(ben.page), 'x-tessera-email'), 'ben@example.com');
  // Ben signs out (everywhere this session was: the pages' sign-out ends the session).
  await ben.page.goto(`${BASE}/settings/security`);
  await Promise.all([ben.page.waitForURL(/\/login$/), ben.page.click('nav button:has-text("Sign out")')]);
  const afterLogout = await visit(ben.page, `${APP}/private`);
  assert.ok(afterLogout.url.startsWith(`${BASE}/login`), `refused after signing out: ${afterLogout.url}`);
  if (caddy) {
    const names = (await ben.context.cookies()).map((c) => `${c.name}@${c.domain}`);
    assert.ok(!names.some((n) => n.startsWith('__Secure-tessera_fwd')), `the domain-wide cookie is cleared: ${names}`);
  }
  step(`${MODE}: signed out → the next request through the proxy is refused`);

  if (caddy) {
    // The domain-wide cookie: set for the domain, Secure, HttpOnly; the pages' cookies stay on
    // their host.
    await signInAgain(ben, benTotp.secret);
    const cookies = await ben.context.cookies();
    const fwd = cookies.find((c) => c.name === '__Secure-tessera_fwd');
    assert.ok(fwd, 'the domain-wide cookie');
    assert.equal(fwd.domain, '.tessera.test');
    assert.ok(fwd.secure && fwd.httpOnly);
    const session = cookies.find((c) => c.name === '__Host-tessera_session');
    assert.equal(session.domain, new URL(BASE).hostname, 'the session cookie stays on the sign-in host');
    const resp = await ben.page.goto(`${BASE}/login`);
    assert.match(resp.headers()['strict-transport-security'] ?? '', /max-age=\d+/, 'HSTS on https');
    step('caddy: the domain-wide cookie is for .tessera.test, Secure and HttpOnly; the session cookie stays on its host; HSTS');
  }

  if (!caddy) {
    // --- an account that requires MFA -------------------------------------------------------------
    const olga = await newUser(browser, 'olga@example.com', contextOptions);
    await enrolTotp(olga.page);
    await olga.page.goto(`${BASE}/accounts`);
    await olga.page.fill('#name', 'Acme');
    await olga.page.click('button:text("Create account")');
    await olga.page.waitForURL(/\/accounts\/[0-9a-f-]+$/);
    const acme = olga.page.url();
    const accountId = acme.split('/').pop();
    const max = await newUser(browser, 'max@example.com', contextOptions);
    await olga.page.goto(`${acme}/settings`);
    await olga.page.fill('#member-email', 'max@example.com');
    await olga.page.click('button:text("Send invitation")');
    await olga.page.waitForURL(/done=invited/);
    await max.page.goto(`${BASE}/accounts`);
    await max.page.fill('#invitations input[name=code]', invitationCode('max@example.com'));
    await Promise.all([max.page.waitForURL(acme), max.page.click('#invitations button:text("Accept")')]);
    await olga.page.goto(`${acme}/settings`);
    await olga.page.check('#require_mfa');
    await olga.page.click('button:text("Save")');
    await olga.page.waitForURL(/done=saved/);
    // The operator configures the proxy for this account (its id in the check's URL).
    const conf = process.env.ACCOUNT_CONF;
    writeFileSync(conf, readFileSync(`${conf}.in`, 'utf8').replaceAll('ACCOUNT_ID', accountId));
    execFileSync(process.env.NGINX_BIN, JSON.parse(process.env.NGINX_RELOAD), { stdio: 'inherit' });
    const ACCT_APP = process.env.ACCOUNT_APP_URL;
    let refused;
    for (let i = 0; i < 50; i++) {
      try {
        refused = await visit(max.page, `${ACCT_APP}/acme`);
        if (refused.resp && refused.resp.status() !== 502) break;
      } catch (e) {
        if (i === 49) throw e;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(refused.url.startsWith(`${BASE}/login?rd=`), `a password-only member is refused: ${refused.url}`);
    assert.match(await max.page.textContent('#needs-more'), /You are signed in, but the app you came from needs\s+two-factor/);
    assert.equal(await max.page.getAttribute('#back-to-app', 'href'), `${ACCT_APP}/acme`);
    await shot(max.page, '32-nginx-account-requires-mfa');
    // Max sets up an authenticator (his first factor raises this session): now he is let in.
    await enrolTotp(max.page);
    await visit(max.page, `${ACCT_APP}/acme`);
    const seenMax = await echoed(max.page);
    assert.equal(header(seenMax, 'x-tessera-email'), 'max@example.com');
    // Olga is let in too; Ann (not a member) is refused with 403.
    await visit(olga.page, `${ACCT_APP}/acme`);
    assert.equal(header(await echoed(olga.page), 'x-tessera-email'), 'olga@example.com');
    const annOut = await ann.page.goto(`${ACCT_APP}/acme`);
    assert.equal(annOut.status(), 403, 'not a member');
    step('nginx: an account that requires MFA refused a password-only member, then let him in after enrolment; a non-member gets 403');
  }

  writeFileSync(`${process.env.OUT_DIR}/steps-${MODE}.txt`, steps.join('\n') + '\n');
} finally {
  await browser.close();
}

async function signInAgain(who, secret) {
  await who.page.goto(`${BASE}/login`);
  await who.page.fill('#email', who.email);
  await who.page.fill('#password', PASSWORD);
  await Promise.all([who.page.waitForURL(/\/login\/code$/), who.page.click('button:text("Sign in")')]);
  await who.page.fill('#code', await unusedCode(secret));
  await Promise.all([who.page.waitForURL(`${BASE}/accounts`), who.page.click('button:text("Verify")')]);
}
