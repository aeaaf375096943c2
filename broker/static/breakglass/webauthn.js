// WebAuthn for the break-glass pages: registration (data-webauthn="create") and assertion
// (data-webauthn="get"). Options come from the server (json_script); the credential goes
// back in a hidden form field as JSON with base64url-encoded binary members.
(function () {
  "use strict";
  const form = document.getElementById("webauthn-form");
  const optionsNode = document.getElementById("webauthn-options");
  if (!form || !optionsNode) { return; }
  const errorNode = document.getElementById("webauthn-error");
  const mode = form.dataset.webauthn;

  function toBytes(b64url) {
    const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }
  function toB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i++) { text += String.fromCharCode(bytes[i]); }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function publicKeyOptions() {
    const opts = JSON.parse(optionsNode.textContent);
    opts.challenge = toBytes(opts.challenge);
    if (opts.user) { opts.user.id = toBytes(opts.user.id); }
    for (const list of [opts.excludeCredentials, opts.allowCredentials]) {
      (list || []).forEach((c) => { c.id = toBytes(c.id); });
    }
    return opts;
  }
  function serialize(cred) {
    const r = cred.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (mode === "create") {
      response.attestationObject = toB64url(r.attestationObject);
      if (r.getTransports) { response.transports = r.getTransports(); }
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) { response.userHandle = toB64url(r.userHandle); }
    }
    return JSON.stringify({
      id: cred.id, rawId: toB64url(cred.rawId), type: cred.type, response: response,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      authenticatorAttachment: cred.authenticatorAttachment || null,
    });
  }
  form.addEventListener("submit", async (event) => {
    const field = form.querySelector("input[type=hidden]:not([name=csrfmiddlewaretoken])");
    if (field.value) { return; }
    event.preventDefault();
    errorNode.hidden = true;
    if (!window.PublicKeyCredential) {
      errorNode.textContent = "This browser does not support security keys (WebAuthn).";
      errorNode.hidden = false;
      return;
    }
    try {
      const publicKey = publicKeyOptions();
      const cred = mode === "create"
        ? await navigator.credentials.create({ publicKey })
        : await navigator.credentials.get({ publicKey });
      field.value = serialize(cred);
      form.submit();
    } catch (err) {
      errorNode.textContent = "The security key did not answer (" + err.name + "). Try again.";
      errorNode.hidden = false;
    }
  });
})();
