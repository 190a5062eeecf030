// Page-wide behaviour: show errors that htmx does not swap (403, 404, 5xx) in the flash bar.
(function () {
  "use strict";
  function flash(text) {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { el.hidden = true; }, 8000);
  }
  window.SBflash = flash;
  document.addEventListener("htmx:responseError", (e) => {
    const xhr = e.detail.xhr;
    let text = xhr.statusText || "request failed";
    try {
      const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      const msg = doc.querySelector(".error-message");
      if (msg) text = msg.textContent.trim();
    } catch (_) { /* keep the status text */ }
    flash(`${xhr.status}: ${text}`);
  });
  document.addEventListener("htmx:sendError", () => flash("The server cannot be reached; retrying."));
})();
