// The colour theme: "system" (the default: prefers-color-scheme, followed as it changes), "light" or
// "dark", chosen with the top bar's button and kept in this browser (localStorage). A classic script in
// the head, so <html data-theme> is set before the page is drawn (no flash of the other theme); the
// stylesheet's variables do the rest. Charts listen for the "sb:theme" event (static/js/charts.js).
(function () {
  "use strict";
  const KEY = "sb:theme";
  const CHOICES = ["system", "light", "dark"];
  const media = window.matchMedia("(prefers-color-scheme: dark)");

  function chosen() {
    let c = null;
    try { c = window.localStorage.getItem(KEY); } catch (_) { /* storage off: the system's theme */ }
    return CHOICES.includes(c) ? c : "system";
  }

  function apply() {
    const c = chosen();
    const theme = c === "system" ? (media.matches ? "dark" : "light") : c;
    const root = document.documentElement;
    root.dataset.themeChoice = c;
    if (root.dataset.theme !== theme) {
      root.dataset.theme = theme;
      document.dispatchEvent(new CustomEvent("sb:theme", {detail: theme}));
    }
  }

  function label(button) {
    const c = chosen();
    const icon = document.createElement("span");
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = c === "system" ? "◐ " : c === "dark" ? "☾ " : "☀ ";
    button.replaceChildren(icon, `Theme: ${c === "system" ? "auto" : c}`);
    button.title = "Colour theme: auto (as the system), light or dark; click to change";
  }

  apply();
  media.addEventListener("change", apply);
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    label(button);
    button.addEventListener("click", () => {
      const next = CHOICES[(CHOICES.indexOf(chosen()) + 1) % CHOICES.length];
      try { window.localStorage.setItem(KEY, next); } catch (_) { /* kept for this page only */ }
      apply();
      label(button);
    });
  });
})();
