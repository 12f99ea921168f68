// The record upload: sends the chosen file as it is to POST /api/imports (CSV or FHIR Bundle), then shows the
// new patient list, or the importer's error where the form is (nothing was written).
"use strict";
(function () {
  const form = document.getElementById("import-form");
  if (!form) return;
  const result = document.getElementById("import-result");
  const button = form.querySelector("button[type=submit]");

  function show(message) {
    result.className = "alert lines";
    result.textContent = message;
    result.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) { show("Choose a file to import."); return; }
    const prefix = form.elements.record_prefix.value.trim();
    const isBundle = /\.json$/i.test(file.name);
    const query = new URLSearchParams({ filename: file.name });
    if (prefix) query.set("record_prefix", prefix);
    button.disabled = true;
    result.className = "notice";
    result.textContent = "Importing " + file.name + "…";
    try {
      const response = await fetch("/api/imports?" + query, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": isBundle ? "application/fhir+json" : "text/csv", "X-CSRF-Token": form.dataset.csrf },
        body: file,
      });
      if (response.status === 201) { window.location.assign("/patients?imported=1"); return; }
      let detail = "the import failed (HTTP " + response.status + ")";
      try {
        const body = await response.json();
        if (typeof body.detail === "string") detail = body.detail;
        else if (Array.isArray(body.detail)) detail = body.detail.map((e) => e.loc.join(".") + ": " + e.msg).join("\n");
      } catch (ignored) { /* keep the status line */ }
      show("Nothing imported. " + detail);
    } catch (error) {
      show("Nothing imported: the console could not be reached (" + error + ").");
    } finally {
      button.disabled = false;
    }
  });
  result.tabIndex = -1;
})();
