// WebAuthn ceremonies (security keys and passkeys). The page carries the options the server
// made (data-options, the WebAuthn spec's JSON); this asks the browser for the credential and
// posts its answer back in the page's form (with the CSRF field). Nothing else: no fetch, no
// inline script.
const b64u = {
  toBuf: (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4)), (c) => c.charCodeAt(0)).buffer,
  fromBuf: (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''),
};

function creationOptions(o) {
  const pk = { ...o.publicKey };
  pk.challenge = b64u.toBuf(pk.challenge);
  pk.user = { ...pk.user, id: b64u.toBuf(pk.user.id) };
  pk.excludeCredentials = (pk.excludeCredentials || []).map((c) => ({ ...c, id: b64u.toBuf(c.id) }));
  return { publicKey: pk };
}

function requestOptions(o) {
  const pk = { ...o.publicKey };
  pk.challenge = b64u.toBuf(pk.challenge);
  pk.allowCredentials = (pk.allowCredentials || []).map((c) => ({ ...c, id: b64u.toBuf(c.id) }));
  return { publicKey: pk };
}

function registration(c) {
  const r = c.response;
  return {
    id: c.id,
    rawId: b64u.fromBuf(c.rawId),
    type: c.type,
    response: {
      attestationObject: b64u.fromBuf(r.attestationObject),
      clientDataJSON: b64u.fromBuf(r.clientDataJSON),
      transports: typeof r.getTransports === 'function' ? r.getTransports() : [],
    },
    extensions: c.getClientExtensionResults(),
  };
}

function assertion(c) {
  const r = c.response;
  return {
    id: c.id,
    rawId: b64u.fromBuf(c.rawId),
    type: c.type,
    response: {
      authenticatorData: b64u.fromBuf(r.authenticatorData),
      clientDataJSON: b64u.fromBuf(r.clientDataJSON),
      signature: b64u.fromBuf(r.signature),
      userHandle: r.userHandle ? b64u.fromBuf(r.userHandle) : null,
    },
    extensions: c.getClientExtensionResults(),
  };
}

document.addEventListener('DOMContentLoaded', () => {
  const box = document.getElementById('webauthn');
  if (!box) return;
  const start = document.getElementById('webauthn-start');
  const status = document.getElementById('webauthn-status');
  const form = document.getElementById('webauthn-form');
  if (!window.PublicKeyCredential || !navigator.credentials) {
    status.textContent = 'This browser cannot use security keys or passkeys.';
    return;
  }
  start.hidden = false;
  start.addEventListener('click', async () => {
    start.disabled = true;
    status.textContent = 'Follow your browser\'s prompt: touch your key, or use your fingerprint, face or PIN.';
    try {
      const options = JSON.parse(box.dataset.options);
      const create = box.dataset.webauthn === 'create';
      const cred = create
        ? await navigator.credentials.create(creationOptions(options))
        : await navigator.credentials.get(requestOptions(options));
      form.elements.response.value = JSON.stringify(create ? registration(cred) : assertion(cred));
      status.textContent = 'Checking…';
      form.submit();
    } catch (e) {
      start.disabled = false;
      status.textContent = e && e.name === 'NotAllowedError'
        ? 'Cancelled, or no matching key answered in time. Try again.'
        : e && e.name === 'InvalidStateError'
          ? 'This authenticator is registered already.'
          : 'That did not work (' + (e && e.name ? e.name : 'error') + '). Try again.';
    }
  });
});
