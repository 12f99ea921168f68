// The portal's only script: the patient's wallet signs consent changes (EIP-1193, eth_signTypedData_v4),
// and a page whose change is on its way to the ledger checks until the ledger has recorded it.
"use strict";

(function () {
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (ignored) { body = null; }
    if (!response.ok) {
      throw new Error((body && typeof body.detail === "string") ? body.detail : "the portal answered " + response.status);
    }
    return body;
  }

  function walletSigning(form) {
    const status = document.getElementById("wallet-status");
    const button = form.querySelector('button[type="submit"]');
    function say(text, isError) {
      status.textContent = text;
      status.className = isError ? "alert" : "notice";
    }
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (!window.ethereum || typeof window.ethereum.request !== "function") {
        say("No wallet found in this browser. Open this page in your wallet's browser, or install a wallet extension.", true);
        return;
      }
      const action = form.dataset.action;
      const study = form.dataset.study;
      const expected = form.dataset.address.toLowerCase();
      button.disabled = true;
      try {
        say("Asking your wallet for your account…");
        const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
        const account = (accounts || []).find(function (a) { return String(a).toLowerCase() === expected; });
        if (!account) {
          throw new Error("your wallet does not offer the account " + form.dataset.address +
                          " you gave at enrolment: switch to it in your wallet");
        }
        let query = "";
        const until = form.querySelector('input[name="valid_until"]');
        if (until && until.value) { query = "?valid_until=" + encodeURIComponent(until.value + "T00:00:00Z"); }
        const typed = form.dataset.typed ? JSON.parse(form.dataset.typed)
          : await api("/api/studies/" + study + "/" + action + "/typed-data" + query);
        say("Confirm in your wallet…");
        const signature = await window.ethereum.request({
          method: "eth_signTypedData_v4", params: [account, JSON.stringify(typed)],
        });
        const m = typed.message;
        const body = action === "grant"
          ? { valid_from: m.validFrom, valid_until: m.validUntil, nonce: m.nonce, deadline: m.deadline, signature: signature }
          : { nonce: m.nonce, deadline: m.deadline, signature: signature };
        say("Sending your signed choice to the ledger…");
        if (form.dataset.signed) {  // the withdrawal door: no session, the signature speaks for the patient
          const sent = await api(form.dataset.signed, {
            method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify(Object.assign({ username: form.dataset.username, study_id: study }, body)),
          });
          say(sent.status === "recorded" ? "Your withdrawal is recorded on the consent ledger at block " + sent.block + "."
            : "Your withdrawal is sent: the consent ledger will record it within a minute. Log in later to see it.");
          return;
        }
        const result = await api("/api/studies/" + study + "/" + action + "/signed", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
          body: JSON.stringify(body),
        });
        window.location.assign("/studies/" + study + "?change=" + result.change_id + "#choice");
      } catch (error) {
        say("Not sent: " + ((error && error.message) || error), true);
        button.disabled = false;
      }
    });
  }

  function followChange(box) {
    async function check() {
      try {
        const change = await api("/api/changes/" + box.dataset.change);
        if (change.status !== "sent") { window.location.reload(); return; }
      } catch (ignored) { /* try again */ }
      window.setTimeout(check, 1500);
    }
    window.setTimeout(check, 1000);
  }

  function fillAddress(button) {
    if (!window.ethereum || typeof window.ethereum.request !== "function") { return; }
    button.hidden = false;
    button.addEventListener("click", async function () {
      try {
        const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
        if (accounts && accounts.length) {
          document.getElementById("wallet-address").value = accounts[0];
          document.getElementById("custody-wallet").checked = true;
        }
      } catch (ignored) { /* the patient declined in the wallet */ }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("wallet-form");
    if (form) { walletSigning(form); }
    const box = document.querySelector('[data-change][data-status="sent"]');
    if (box) { followChange(box); }
    const fill = document.getElementById("fill-address");
    if (fill) { fillAddress(fill); }
  });
})();
