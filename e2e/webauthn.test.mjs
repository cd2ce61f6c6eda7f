// Security keys and passkeys in headless Debian Chromium, with the DevTools Protocol's virtual
// authenticators (WebAuthn.enable, WebAuthn.addVirtualAuthenticator: ctap2 over usb for a
// security key, internal with resident keys and user verification for a passkey), against a real
// `tessera serve` whose --public-url is http://localhost:PORT (an IP address cannot be a WebAuthn
// relying party). Started by crates/tessera/tests/browser.rs.
//
// Run by hand: BASE_URL=http://localhost:8080 OUT_DIR=/tmp/shots node e2e/webauthn.test.mjs
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { BASE, OUT, accessible, launch, login, logout, newUser, shot, step, steps, totp } from './lib.mjs';

/// A virtual authenticator in `page`'s browser tab; returns the CDP session and its id.
async function virtualAuthenticator(page, transport) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport,
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, authenticatorId };
}

/// Click a ceremony page's button (the script asks the authenticator and posts the answer) and
/// wait for the page the answer leads to.
async function ceremony(page, button) {
  await page.locator('#webauthn-start').waitFor({ state: 'visible' });
  assert.equal((await page.textContent('#webauthn-start')).trim(), button);
  const before = page.url();
  await page.click('#webauthn-start');
  try {
    await page.waitForURL((u) => u.href !== before, { timeout: 15000 });
  } catch (e) {
    throw new Error(`no answer posted: ${await page.textContent('#webauthn-status')} (${e.message}); options ${await page.getAttribute('#webauthn', 'data-options')}`);
  }
  await page.locator('main h1').waitFor();
}

/// Add a security key (or passkey) from the security page.
async function addKey(page, label, kind) {
  await page.goto(`${BASE}/settings/security`);
  await page.fill('#key-label', label);
  await page.check(`input[name=kind][value=${kind}]`);
  await page.click('#add-key button[type=submit]');
  await page.locator('main h1').waitFor();
}

const browser = await launch();
try {
  // --- a security key as the second factor -------------------------------------------------------
  const ann = await newUser(browser, 'ann@example.com');
  const annKey = await virtualAuthenticator(ann.page, 'usb');
  await addKey(ann.page, 'USB key', 'security_key');
  assert.equal((await ann.page.textContent('main h1')).trim(), 'Add a security key');
  await shot(ann.page, '20-key-register');
  await accessible(ann.page, 'security key registration');
  await ceremony(ann.page, 'Register security key');
  // The first factor: recovery codes, shown once.
  await ann.page.waitForSelector('#recovery-codes');
  assert.equal(await ann.page.locator('#recovery-codes code').count(), 10);
  await ann.page.goto(`${BASE}/settings/security`);
  assert.match(await ann.page.textContent('#devices'), /USB key\s*Security key/);
  const [registered] = (await annKey.cdp.send('WebAuthn.getCredentials', { authenticatorId: annKey.authenticatorId }))
    .credentials;
  assert.equal(registered.rpId, 'localhost');
  step('added a security key from the security page (ctap2 over usb); the first factor brought recovery codes');

  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  assert.equal(await ann.page.locator('input[name=code]').count(), 0, 'no code field: ann has no authenticator app');
  await ann.page.click('button:text("Use your security key")');
  await shot(ann.page, '21-login-key');
  await accessible(ann.page, 'security key sign-in');
  await ceremony(ann.page, 'Use security key');
  assert.equal(ann.page.url(), `${BASE}/accounts`);
  step('signed out, then in: password, then "Use your security key"');

  // --- trust this browser ---------------------------------------------------------------------
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  await ann.page.check('#trust-key');
  await ann.page.click('button:text("Use your security key")');
  await ceremony(ann.page, 'Use security key');
  assert.equal(ann.page.url(), `${BASE}/accounts`);
  const trustCookie = (await ann.context.cookies()).find((c) => c.name === '__Host-tessera_trust');
  assert.ok(trustCookie && trustCookie.secure && trustCookie.httpOnly, 'a Secure, HttpOnly trust cookie');
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/accounts`);
  step('ticked "Trust this browser", signed out, signed in again: the password only');
  // Revoked from the list: the key is asked for again.
  await ann.page.goto(`${BASE}/settings/security`);
  assert.match(await ann.page.textContent('#trusted'), /Chrom/);
  await shot(ann.page, '24-trusted-browsers');
  await accessible(ann.page, 'security page with a trusted browser');
  await Promise.all([ann.page.waitForURL(/done=trust-revoked/), ann.page.click('#trusted button:has-text("Revoke")')]);
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  step('revoked the browser from the list: the next sign-in asked for the key again');
  // Trusted again; then a factor is added (an authenticator app): every trust ends.
  await ann.page.check('#trust-key');
  await ann.page.click('button:text("Use your security key")');
  await ceremony(ann.page, 'Use security key');
  await ann.page.goto(`${BASE}/settings/security`);
  await ann.page.fill('#label', 'Phone');
  await ann.page.click('button:text("Add another authenticator app")');
  await ann.page.waitForURL(/\/settings\/(security\/totp\/|reauth)/);
  if (ann.page.url().includes('/settings/reauth')) {
    // The trusted session proved no factor: confirm with the key first.
    await ann.page.click('#reauth-key button');
    await ceremony(ann.page, 'Use security key');
    await ann.page.fill('#label', 'Phone');
    await ann.page.click('button:text("Add another authenticator app")');
    await ann.page.waitForURL(/\/settings\/security\/totp\//);
  }
  const secret = (await ann.page.textContent('#secret')).replace(/\s+/g, '');
  await ann.page.fill('#code', totp(secret));
  await Promise.all([ann.page.waitForURL(/done=added/), ann.page.click('button:text("Turn on two-factor authentication")')]);
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  assert.equal(await ann.page.locator('input[name=code]').count(), 1, 'the code field, now that ann has an app');
  step('a factor added (an authenticator app) ended the trust: the next sign-in asked for a factor');
  await ann.page.click('button:text("Use your security key")');
  await ceremony(ann.page, 'Use security key');
  // An account of hers requires MFA and trusts browsers for 0 days: a trust is not honoured.
  await ann.page.goto(`${BASE}/accounts`);
  await ann.page.fill('#name', 'Ann Co');
  await ann.page.click('button:text("Create account")');
  await ann.page.waitForURL(/\/accounts\/[0-9a-f-]+$/);
  await ann.page.goto(`${ann.page.url()}/settings`);
  await ann.page.check('#require_mfa');
  await ann.page.fill('#max_trust_days', '0');
  await Promise.all([ann.page.waitForURL(/done=saved/), ann.page.click('button:text("Save")')]);
  assert.equal(await ann.page.inputValue('#max_trust_days'), '0');
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  await ann.page.fill('#code', totp(secret, 30));
  await ann.page.check('#trust');
  await Promise.all([ann.page.waitForURL(`${BASE}/accounts`), ann.page.click('button:text("Verify")')]);
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  step('an account requiring MFA with max_trust_days = 0: the trusted browser was asked for a factor again');
  await ann.page.click('button:text("Use your security key")');
  await ceremony(ann.page, 'Use security key');

  // --- a cloned credential (the same key with its counter reset) is refused ----------------------
  const { credentials } = await annKey.cdp.send('WebAuthn.getCredentials', { authenticatorId: annKey.authenticatorId });
  assert.ok(credentials[0].signCount >= 1, `the key counts its signatures: ${credentials[0].signCount}`);
  await annKey.cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: annKey.authenticatorId });
  const clone = await virtualAuthenticator(ann.page, 'usb');
  await clone.cdp.send('WebAuthn.addCredential', {
    authenticatorId: clone.authenticatorId,
    credential: { ...credentials[0], signCount: 0 },
  });
  await logout(ann.page);
  await login(ann.page, 'ann@example.com');
  await ann.page.waitForURL(`${BASE}/login/code`);
  await ann.page.click('button:text("Use your security key")');
  await ceremony(ann.page, 'Use security key');
  assert.match(await ann.page.textContent('#form-error'), /signature counter went backwards/);
  assert.equal(
    (await ann.context.cookies()).find((c) => c.name === '__Host-tessera_session'),
    undefined,
    'the clone signed nobody in',
  );
  await shot(ann.page, '23-clone-refused');
  step('a clone of the key (same credential, counter reset through WebAuthn.addCredential) was refused');

  // --- a passkey signs in alone, into an account that requires MFA -------------------------------
  const bea = await newUser(browser, 'bea@example.com');
  await virtualAuthenticator(bea.page, 'internal');
  await addKey(bea.page, 'This laptop', 'passkey');
  assert.equal((await bea.page.textContent('main h1')).trim(), 'Add a passkey');
  await ceremony(bea.page, 'Create passkey');
  await bea.page.waitForSelector('#recovery-codes');
  await bea.page.goto(`${BASE}/accounts`);
  await bea.page.fill('#name', 'Acme');
  await bea.page.click('button:text("Create account")');
  await bea.page.waitForURL(/\/accounts\/[0-9a-f-]+$/);
  const acme = bea.page.url();
  await bea.page.goto(`${acme}/settings`);
  await bea.page.check('#require_mfa');
  await bea.page.click('button:text("Save")');
  await bea.page.waitForURL(/done=saved/);
  await logout(bea.page);
  await bea.page.goto(`${BASE}/login`);
  await bea.page.click('button:text("Sign in with a passkey")');
  await shot(bea.page, '22-passkey-login');
  await accessible(bea.page, 'passkey sign-in');
  await ceremony(bea.page, 'Use passkey');
  assert.equal(bea.page.url(), `${BASE}/accounts`);
  const inside = await bea.page.goto(acme);
  assert.equal(inside.status(), 200, 'the passkey session opens an account that requires MFA');
  step('added a passkey (internal, resident key, user verification); signed in with it alone into an account requiring MFA');

  // --- a removed passkey no longer works ---------------------------------------------------------
  await bea.page.goto(`${BASE}/settings/security`);
  await Promise.all([bea.page.waitForURL(/done=removed/), bea.page.click('#devices button:has-text("Remove")')]);
  await logout(bea.page);
  await bea.page.goto(`${BASE}/login`);
  await bea.page.click('button:text("Sign in with a passkey")');
  await ceremony(bea.page, 'Use passkey');
  assert.match(await bea.page.textContent('#form-error'), /isn't one that can sign in here/);
  step('a removed passkey no longer signs in (the authenticator still holds it)');

  for (const p of [ann.problems, bea.problems]) assert.deepEqual(p, [], 'no console errors');
  writeFileSync(path.join(OUT, 'webauthn-summary.json'), JSON.stringify({ ok: true, steps }, null, 2));
  console.log(`webauthn e2e: ${steps.length} scenarios passed; screenshots in ${OUT}`);
} finally {
  await browser.close();
}
