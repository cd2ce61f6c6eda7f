// End-to-end test of Tessera's web pages in headless Debian Chromium, driven by playwright-core,
// against a real `tessera serve` on 127.0.0.1 (started by crates/tessera/tests/browser.rs, which
// passes BASE_URL and OUT_DIR). Codes come from oathtool (an independent TOTP implementation);
// the QR code is decoded with zxing-cpp; accessibility is checked with axe-core.
//
// Run by hand: BASE_URL=http://127.0.0.1:8080 OUT_DIR=/tmp/shots node e2e/web.test.mjs
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  BASE,
  EMAIL_CHANGE_LINK,
  OUT,
  PASSWORD,
  VERIFY_LINK,
  accessible,
  createAccount,
  enrolTotp,
  invitationCode,
  launch,
  linkIn,
  login,
  logout,
  mailTo,
  newUser,
  shot,
  step,
  steps,
  totp,
  verifyAndSignIn,
  watch,
  wrongCode,
} from './lib.mjs';

const browser = await launch();
try {
  // Dana signs up first and leaves this browser alone: by the time the scenario reaches her,
  // this password-only session is older than the re-authentication window (1 minute here).
  const stale = await newUser(browser, 'dana@example.com');
  const staleSince = Date.now();

  // --- sign up; security headers and cookie attributes -----------------------------------------
  const ctxA = await browser.newContext({ acceptDownloads: true });
  const a = await ctxA.newPage();
  const aProblems = [];
  watch(a, aProblems);
  const first = await a.goto(`${BASE}/signup`);
  const h = first.headers();
  assert.match(h['content-security-policy'], /script-src 'self'/);
  assert.doesNotMatch(h['content-security-policy'], /unsafe-inline/);
  assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(h['x-frame-options'], 'DENY');
  assert.equal(h['referrer-policy'], 'no-referrer');
  assert.equal(h['x-content-type-options'], 'nosniff');
  await shot(a, '01-signup');
  await accessible(a, 'signup');
  await a.fill('#email', 'ada@example.com');
  await a.fill('#password', 'short');
  // The browser would stop this (minlength); the server must refuse it too, in words.
  await a.$eval('#password', (e) => e.removeAttribute('minlength'));
  await a.click('button:text("Create account")');
  assert.match(await a.textContent('#form-error'), /at least 10 characters/i, 'a short password is refused in words');
  // The server's breached-password list (an offline range directory in this test) has this one.
  await a.fill('#password', 'Tr0ub4dor&3 everybody knows');
  await a.click('button:text("Create account")');
  assert.match(await a.textContent('#form-error'), /appears in 42 known data breaches/, 'a breached password is refused in words');
  await shot(a, '01b-signup-breached');
  await a.fill('#password', PASSWORD);
  // Sign-up signs nobody in: it says to check the mail, which carries the confirmation link.
  const checkEmail = await createAccount(a);
  const noSession = async () =>
    assert.equal((await ctxA.cookies()).find((c) => c.name === '__Host-tessera_session'), undefined, 'no session cookie yet');
  await noSession();
  await shot(a, '01d-check-email');
  await accessible(a, 'check your email');
  // The right password before the address is confirmed: refused, with a way to get a new link.
  await a.goto(`${BASE}/login`);
  await a.fill('#email', 'ada@example.com');
  await a.fill('#password', PASSWORD);
  const [unverified] = await Promise.all([
    a.waitForResponse((r) => r.url() === `${BASE}/login` && r.request().method() === 'POST'),
    a.click('button:text("Sign in")'),
  ]);
  // (Answered as a wrong password is: otherwise signing up and then in would tell a stranger
  // whether the address was already registered.)
  assert.equal(unverified.status(), 401, 'an unconfirmed address cannot sign in');
  assert.match(await a.textContent('#form-error'), /Just signed up\? Confirm your address first\./);
  await a.locator('#resend-verification').waitFor({ state: 'visible' });
  await noSession();
  await shot(a, '01c-unverified');
  // A second tab opens the link too (its page only shows a button); the first one confirms.
  const early = await ctxA.newPage();
  watch(early, aProblems);
  await early.goto(linkIn('ada@example.com', 'Confirm your email address', VERIFY_LINK));
  const verifyLink = await verifyAndSignIn(a, 'ada@example.com');
  // The link works once: the other tab's button and the link opened again are refused.
  await early.fill('#password', PASSWORD);
  const [late] = await Promise.all([
    early.waitForResponse((r) => r.url() === `${BASE}/verify-email` && r.request().method() === 'POST'),
    early.click('button:text("Confirm my email address")'),
  ]);
  assert.equal(late.status(), 410, 'a used verification link is refused');
  assert.match(await early.textContent('main'), /This link has expired or was already used\. Request a new one\./);
  await early.close();
  const reopened = await a.goto(verifyLink);
  assert.equal(reopened.status(), 410, 'the verification link works once');
  assert.match(await a.textContent('main'), /This link has expired or was already used/);
  step('sign-up: check-your-email, verification link (once only), unverified sign-in refused');
  const cookies = await ctxA.cookies();
  const session = cookies.find((c) => c.name === '__Host-tessera_session');
  assert.ok(session, 'a __Host- session cookie is set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, 'Lax');
  assert.equal(session.path, '/');
  await a.goto(`${BASE}/settings/security`);
  assert.match(await a.textContent('#mfa-status'), /off/);
  assert.equal((await a.textContent('#account-email')).trim(), 'ada@example.com');
  await shot(a, '02-security-off');
  await accessible(a, 'security (off)');
  step('signed up; headers and cookie attributes checked');

  // Signing up again with a registered address: the same page (signed in or not, the session is
  // untouched), and the owner is told by mail.
  await a.goto(`${BASE}/signup`);
  await a.fill('#email', 'ada@example.com');
  await a.fill('#password', PASSWORD);
  assert.equal(await createAccount(a), checkEmail, 'the same answer for a registered address');
  assert.ok(mailTo('ada@example.com', 'Someone tried to create an account').trim(), 'the owner is told');
  await a.goto(`${BASE}/settings/security`);
  assert.equal(a.url(), `${BASE}/settings/security`, 'the second sign-up left the session alone');
  step('a sign-up with a registered address got the same page; the owner was mailed');

  // --- set up 2FA by reading the manual key; the QR code carries the same URI -------------------
  const { secret, codes } = await enrolTotp(a, true);
  await shot(a, '04-recovery-codes');
  await accessible(a, 'recovery codes');
  const [download] = await Promise.all([a.waitForEvent('download'), a.click('#download-codes')]);
  assert.equal(download.suggestedFilename(), 'tessera-recovery-codes.txt');
  const text = readFileSync(await download.path(), 'utf8');
  for (const c of codes) assert.ok(text.includes(c), 'the download holds every code');
  await a.click('#saved-codes');
  await a.waitForURL(`${BASE}/settings/security`);
  assert.match(await a.textContent('#mfa-status'), /on/);
  assert.match(await a.textContent('#codes-left'), /10 unused recovery codes/);
  await shot(a, '05-security-on');
  step('set up 2FA from the manual key; QR decodes to the same otpauth URI; 10 recovery codes shown and downloaded');

  // The secret is shown only while the device is pending.
  const devices = await a.locator('a:text("continue")').count();
  assert.equal(devices, 0, 'no pending device left to show');

  // --- log out, log in: password, then the code page ------------------------------------------
  await logout(a);
  await login(a, 'ada@example.com');
  await a.waitForURL(`${BASE}/login/code`);
  assert.equal(await a.getAttribute('#code', 'autocomplete'), 'one-time-code');
  assert.equal(await a.getAttribute('#code', 'inputmode'), 'numeric');
  await shot(a, '06-login-code');
  await accessible(a, 'login code');
  await a.fill('#code', wrongCode(secret));
  await a.click('button:text("Verify")');
  assert.equal(await a.textContent('#form-error'), "That code didn't match. 4 attempts left.");
  await shot(a, '07-login-code-wrong');
  // The enrolment used the current step: a code from the next one is fresh (within the window).
  await a.fill('#code', totp(secret, 30));
  await Promise.all([a.waitForURL(`${BASE}/accounts`), a.click('button:text("Verify")')]);
  step('logged out, logged in with password then code page; a wrong code shows the message');

  // --- log in with a recovery code ----------------------------------------------------------
  await logout(a);
  await login(a, 'ada@example.com');
  await a.waitForURL(`${BASE}/login/code`);
  await a.click('text=Use a recovery code');
  await a.waitForURL(`${BASE}/login/recovery`);
  await accessible(a, 'login recovery');
  await a.fill('#code', codes[0].toLowerCase());
  await Promise.all([a.waitForURL(`${BASE}/accounts`), a.click('button:text("Sign in")')]);
  await a.goto(`${BASE}/settings/security`);
  assert.match(await a.textContent('#codes-left'), /9 unused recovery codes/);
  assert.ok(mailTo('ada@example.com', 'A recovery code was used to sign in').trim(), 'a used recovery code is mailed about');
  // The used code does not work twice.
  await logout(a);
  await login(a, 'ada@example.com');
  await a.waitForURL(`${BASE}/login/code`);
  await a.goto(`${BASE}/login/recovery`);
  await a.fill('#code', codes[0]);
  await a.click('button:text("Sign in")');
  assert.match(await a.textContent('#form-error'), /recovery code didn't match/);
  await a.fill('#code', codes[1]);
  await Promise.all([a.waitForURL(`${BASE}/accounts`), a.click('button:text("Sign in")')]);
  await a.goto(`${BASE}/settings/activity`);
  const activity = await a.textContent('#activity');
  for (const what of ['Recovery code used', 'Wrong recovery code', 'Wrong or already used authenticator code',
    'Signed in with two-factor authentication', 'Turned on an authenticator app', 'Signed up']) {
    assert.ok(activity.includes(what), `activity lists "${what}"`);
  }
  assert.ok(activity.includes('127.0.0.1'), 'activity shows the IP address');
  await shot(a, '08-activity');
  await accessible(a, 'activity');
  step('logged in with a recovery code (once only); activity lists codes, failures and IPs');

  // --- an admin requires MFA; a member without it gets the enrolment prompt ------------------
  const bob = await newUser(browser, 'bob@example.com');
  await bob.page.goto(`${BASE}/accounts`);
  await bob.page.fill('#name', 'Acme');
  await bob.page.click('button:text("Create account")');
  await bob.page.waitForURL(/\/accounts\/[0-9a-f-]+$/);
  const acme = bob.page.url();
  await bob.page.click('text=Account settings');
  const carol = await newUser(browser, 'carol@example.com');
  await bob.page.fill('#member-email', 'carol@example.com');
  await bob.page.click('button:text("Send invitation")');
  await bob.page.waitForURL(/done=invited/);
  assert.match(await bob.page.textContent('#members'), /carol@example\.com\s*member\s*invited/, 'invited, nothing more');
  // Carol accepts, signed in with the invited email.
  await carol.page.goto(`${BASE}/accounts`);
  assert.match(await carol.page.textContent('#invitations'), /Acme/);
  await shot(carol.page, '09a-invitation');
  await accessible(carol.page, 'accounts with an invitation');
  // Accepting takes the code from the invitation mail (which proves the mailbox).
  await carol.page.fill('#invitations input[name=code]', invitationCode('carol@example.com'));
  await Promise.all([carol.page.waitForURL(acme), carol.page.click('#invitations button:text("Accept")')]);
  await bob.page.reload();
  assert.match(await bob.page.textContent('#members'), /carol@example\.com\s*member\s*off/);
  // Bob may not require MFA before he has it himself (he would lock himself out).
  await bob.page.check('#require_mfa');
  await bob.page.click('button:text("Save")');
  assert.match(await bob.page.textContent('#form-error'), /yourself first/);
  await enrolTotp(bob.page);
  await bob.page.goto(`${acme}/settings`);
  await bob.page.check('#require_mfa');
  await bob.page.click('button:text("Save")');
  await bob.page.waitForURL(/done=saved/);
  assert.equal(await bob.page.isChecked('#require_mfa'), true);
  assert.match(await bob.page.textContent('#members'), /carol@example\.com\s*member\s*off/);
  await shot(bob.page, '09-account-settings');
  await accessible(bob.page, 'account settings');

  const resp = await carol.page.goto(acme);
  assert.equal(resp.status(), 403);
  assert.equal(
    (await carol.page.textContent('#mfa-required')).trim(),
    'This account requires two-factor authentication.',
  );
  assert.equal(await carol.page.locator('#account-content').count(), 0, 'never the account content');
  await shot(carol.page, '10-account-requires-mfa');
  await accessible(carol.page, 'account closed');
  // She follows the link, enrols, and the account opens in the same session.
  await carol.page.click('text=Set up two-factor authentication');
  await carol.page.waitForURL(`${BASE}/settings/security`);
  await enrolTotp(carol.page);
  const open = await carol.page.goto(acme);
  assert.equal(open.status(), 200);
  assert.equal(await carol.page.locator('#account-content').count(), 1);
  step('admin required MFA; a member without it saw the enrolment prompt, not the account; after enrolling she got in');

  // --- the attack of issue 11: a stale password-only session never becomes a second factor ------
  // Dana's first browser is now older than the re-authentication window: it cannot start a setup
  // of its own without proving the password again.
  const waitMs = 62_000 - (Date.now() - staleSince);
  if (waitMs > 0) await stale.page.waitForTimeout(waitMs);
  await stale.page.goto(`${BASE}/settings/security`);
  await stale.page.click('text=Set up two-factor authentication');
  await stale.page.waitForURL(/\/settings\/reauth\?next=/);
  assert.equal(await stale.page.locator('#password').count(), 1, 'a stale session must prove the password again');
  await shot(stale.page, '10b-stale-asks-for-password');
  // Later, in another browser, she signs in and starts setting up an authenticator.
  const ctxD = await browser.newContext({ extraHTTPHeaders: { 'X-Forwarded-For': '203.0.113.9' } });
  const d = await ctxD.newPage();
  const dProblems = [];
  watch(d, dProblems);
  await login(d, 'dana@example.com');
  await d.waitForURL(`${BASE}/accounts`);
  // Not her first browser: she is told of the sign-in from a new one.
  assert.ok(mailTo('dana@example.com', 'A new sign-in to your account').trim(), 'a new browser is mailed about');
  await d.goto(`${BASE}/settings/security`);
  await Promise.all([d.waitForURL(/\/settings\/security\/totp\//), d.click('text=Set up two-factor authentication')]);
  const setupUrl = d.url();
  const danaSecret = (await d.textContent('#secret')).replace(/\s+/g, '');
  // The stale session sees that a setup exists elsewhere, never its key, and cannot open it.
  await stale.page.goto(`${BASE}/settings/security`);
  assert.match(await stale.page.textContent('#devices'), /setup started in another session/);
  assert.equal(await stale.page.locator('#devices a:text("continue")').count(), 0);
  assert.ok(!(await stale.page.content()).includes(danaSecret), 'no key on the stale session\'s page');
  const peek = await stale.page.goto(setupUrl);
  assert.equal(peek.status(), 404);
  assert.ok(!(await stale.page.content()).includes(danaSecret), 'the setup page shows no key to another session');
  await shot(stale.page, '11-other-session-setup');
  // Dana confirms in her new browser: her first factor. The page says the other session ended.
  await d.fill('#code', totp(danaSecret));
  await d.click('button:text("Turn on two-factor authentication")');
  await d.waitForSelector('#recovery-codes');
  assert.match(await d.textContent('#mfa-on-notice'), /signed you out of your 1 other session/);
  await shot(d, '12-first-factor-signs-out-others');
  // The stale session is signed out: no key, no recovery codes, no account content.
  for (const where of ['/settings/security', setupUrl, '/accounts']) {
    await stale.page.goto(`${BASE}${where.replace(BASE, '')}`);
    assert.equal(stale.page.url(), `${BASE}/login`, `the stale session is signed out (${where})`);
  }
  const staleAdd = await stale.page.request.post(`${BASE}/settings/security/totp`, {
    form: { label: 'Mine now', csrf: (await stale.context.cookies()).find((c) => c.name === '__Host-tessera_csrf').value },
    maxRedirects: 0,
  });
  assert.equal(staleAdd.status(), 303);
  assert.equal(staleAdd.headers().location, '/login', 'no new authenticator for a stale session');
  // Her sessions are listed; re-authenticating asks for a code and comes back.
  await d.click('#saved-codes');
  await d.waitForURL(`${BASE}/settings/security`);
  assert.match(await d.textContent('#sessions'), /this session/);
  await d.goto(`${BASE}/settings/reauth?next=%2Fsettings%2Fsecurity`);
  await shot(d, '13-reauth');
  await accessible(d, 'reauth');
  await d.fill('#code', totp(danaSecret, 30));
  await Promise.all([d.waitForURL(`${BASE}/settings/security`), d.click('#reauth-code button')]);
  await shot(d, '14-sessions');
  await accessible(d, 'security with sessions');
  step('a stale password-only session saw no key, could not set up its own, and was signed out by the first factor');

  // A stranger's wrong passwords from one address leave Dana's password working from another.
  const ctxS = await browser.newContext({ extraHTTPHeaders: { 'X-Forwarded-For': '198.51.100.7' } });
  const s = await ctxS.newPage();
  for (let i = 0; i < 6; i++) {
    await s.goto(`${BASE}/login`);
    await s.fill('#email', 'dana@example.com');
    await s.fill('#password', `guess number ${i} of many`);
    await s.click('button:text("Sign in")');
  }
  assert.match(await s.textContent('#form-error'), /Too many attempts\. Try again at/);
  await shot(s, '15-stranger-locked');
  await logout(d);
  await login(d, 'dana@example.com');
  await d.waitForURL(`${BASE}/login/code`);
  step('a stranger locked only their own address; the owner signed in from hers');

  // --- A forgotten password: the link from the real mail; the factor is still asked for -----
  const ctxF = await browser.newContext();
  const f = await ctxF.newPage();
  const fProblems = [];
  watch(f, fProblems);
  await f.goto(`${BASE}/login`);
  await Promise.all([f.waitForURL(`${BASE}/password/forgot`), f.click('text=Forgot your password?')]);
  await f.fill('#email', 'dana@example.com');
  await f.click('button:text("Email me a link")');
  await f.waitForSelector('text=If an account uses that address');
  await accessible(f, 'password-forgot-sent');
  const mail = mailTo('dana@example.com', 'Reset your password');
  const link = mail.match(/(https?:\/\/\S+\/password\/reset\?token=[A-Za-z0-9_-]{43})/);
  assert.ok(link, `a reset link in the mail: ${mail}`);
  const u = new URL(link[1]);
  await f.goto(`${BASE}${u.pathname}${u.search}`);
  await accessible(f, 'password-reset');
  await shot(f, '16-password-reset');
  const NEW_PASSWORD = 'fresh words after the reset';
  await f.fill('#password', NEW_PASSWORD);
  await Promise.all([f.waitForURL(`${BASE}/login?reset=1`), f.click('button:text("Set password")')]);
  assert.match(await f.textContent('.notice'), /Your new password is set/);
  await f.fill('#email', 'dana@example.com');
  await f.fill('#password', NEW_PASSWORD);
  await Promise.all([f.waitForURL(`${BASE}/login/code`), f.click('button:text("Sign in")')]);
  const reused = await f.goto(`${BASE}${u.pathname}${u.search}`);
  assert.equal(reused.status(), 410, 'the link works once');
  assert.match(await f.textContent('main'), /This link has expired or was already used/);
  step('forgot password: the mailed link set a new password; sign-in still asked for the code; the link worked once');
  assert.deepEqual(fProblems, [], 'no console errors');
  for (const p of [stale.problems, dProblems]) assert.deepEqual(p, [], 'no console errors');

  // --- CSRF: a POST without the token is refused ----------------------------------------------
  const noToken = await carol.page.request.post(`${BASE}/accounts`, { form: { name: 'Evil' } });
  assert.equal(noToken.status(), 403);
  assert.match(await noToken.text(), /security token/);
  const wrongToken = await carol.page.request.post(`${BASE}/logout`, { form: { csrf: 'x'.repeat(43) } });
  assert.equal(wrongToken.status(), 403);
  const still = await carol.page.goto(`${BASE}/settings/security`);
  assert.equal(still.url(), `${BASE}/settings/security`, 'the refused logout did not sign her out');
  step('POSTs without or with a wrong CSRF token are refused with 403');

  // --- Ada changes her password: recent authentication (her code), then the current one ------
  // Her session is still the one she signed in with a recovery code; its proof may be older
  // than the re-authentication window by now, and she has an authenticator, so the
  // re-authentication page (if it comes) asks for a code.
  await a.goto(`${BASE}/settings/security`);
  await Promise.all([a.waitForURL(`${BASE}/settings/password`), a.click('a[href="/settings/password"]')]);
  await shot(a, '17-password-change');
  await accessible(a, 'password change');
  const ADA_PASSWORD = 'seven quiet lanterns over the harbour';
  const changePassword = async () => {
    await a.fill('#current_password', PASSWORD);
    await a.fill('#new_password', ADA_PASSWORD);
    await Promise.all([
      a.waitForURL(/\/settings\/(security\?done=password|reauth\?next=)/),
      a.click('button:text("Change password")'),
    ]);
  };
  await changePassword();
  if (a.url().includes('/settings/reauth')) {
    await a.fill('#code', totp(secret));
    await Promise.all([a.waitForURL(`${BASE}/settings/password`), a.click('#reauth-code button')]);
    await changePassword();
  }
  assert.equal(a.url(), `${BASE}/settings/security?done=password`);
  assert.match(await a.textContent('.notice'), /Your password is changed\. Your other sessions are signed out\./);
  assert.ok(mailTo('ada@example.com', 'Your password was changed').trim(), 'she is told by mail');
  // The old password no longer works; the new one does (and the code is still asked for).
  await logout(a);
  await login(a, 'ada@example.com');
  assert.match(await a.textContent('#form-error'), /^That email and password don't match\./, 'the old password is refused');
  await a.fill('#email', 'ada@example.com');
  await a.fill('#password', ADA_PASSWORD);
  await Promise.all([a.waitForURL(`${BASE}/login/code`), a.click('button:text("Sign in")')]);
  // The re-authentication may have used the current step: the next one is fresh.
  await a.fill('#code', totp(secret, 30));
  await Promise.all([a.waitForURL(`${BASE}/accounts`), a.click('button:text("Verify")')]);
  step('changed the password after re-authenticating; the old one was refused, the new one (and the code) let her in; a mail told her');

  // --- Finn moves his account to another address: the link goes to the new one ---------------
  const finn = await newUser(browser, 'finn@example.com');
  const fp = finn.page;
  await fp.goto(`${BASE}/settings/security`);
  assert.equal((await fp.textContent('#account-email')).trim(), 'finn@example.com');
  await Promise.all([fp.waitForURL(`${BASE}/settings/email`), fp.click('a[href="/settings/email"]')]);
  await shot(fp, '18-email-change');
  const askForLink = async () => {
    await fp.fill('#new_email', 'finn.new@example.com');
    await fp.click('button:text("Email me a link")');
    await fp.locator('main h1', { hasText: /Check your email|Confirm it/ }).waitFor();
  };
  await askForLink();
  if (fp.url().includes('/settings/reauth')) {
    // No authenticator: the re-authentication page asks for the password.
    await fp.fill('#password', PASSWORD);
    await Promise.all([fp.waitForURL(`${BASE}/settings/email`), fp.click('#reauth-password button')]);
    await askForLink();
  }
  assert.equal((await fp.textContent('main h1')).trim(), 'Check your email');
  await fp.goto(linkIn('finn.new@example.com', 'Confirm your new email address', EMAIL_CHANGE_LINK));
  const [changed] = await Promise.all([
    fp.waitForResponse((r) => r.url() === `${BASE}/settings/email/confirm` && r.request().method() === 'POST'),
    fp.click('button:text("Use this address")'),
  ]);
  assert.equal(changed.status(), 200);
  await fp.locator('main h1', { hasText: 'Email address changed' }).waitFor();
  assert.ok(mailTo('finn@example.com', "Your account's email address was changed").trim(), 'the old address is told');
  // His session stays, under the new address; he signs in with it, and no longer with the old one.
  await fp.goto(`${BASE}/settings/security`);
  assert.equal((await fp.textContent('#account-email')).trim(), 'finn.new@example.com');
  await logout(fp);
  await login(fp, 'finn@example.com');
  assert.match(await fp.textContent('#form-error'), /^That email and password don't match\./, 'the old address no longer signs in');
  await login(fp, 'finn.new@example.com');
  await fp.waitForURL(`${BASE}/accounts`);
  step('changed the email address from the link mailed to the new one; the old one was told and no longer signs in');

  // No page broke its CSP or threw.
  for (const p of [aProblems, bob.problems, carol.problems, finn.problems]) assert.deepEqual(p, [], 'no console errors');
  writeFileSync(path.join(OUT, 'summary.json'), JSON.stringify({ ok: true, steps }, null, 2));
  console.log(`web e2e: ${steps.length} scenarios passed; screenshots in ${OUT}`);
} finally {
  await browser.close();
}
