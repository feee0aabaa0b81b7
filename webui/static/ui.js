// Every page: the phone menu, confirmations before actions that are hard to take back, and
// regions that keep themselves current (batch progress, the queue, the dashboard).
(() => {
  "use strict";

  // ------------------------------------------------------------------ the collapsed menu
  const toggle = document.querySelector(".nav-toggle");
  const menu = document.getElementById("menu");
  if (toggle && menu) {
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      menu.classList.toggle("open", open);
    });
  }

  // ------------------------------------------------------------------ confirmations
  // <form data-confirm="Roll back to v1?"> asks before it is sent; a <select> in such a form
  // may name the choice in the question with {choice}.
  document.addEventListener("submit", (e) => {
    const form = e.target;
    const question = form && form.dataset ? form.dataset.confirm : null;
    if (!question) return;
    const select = form.querySelector("select");
    const choice = select ? select.options[select.selectedIndex].text : "";
    if (!window.confirm(question.replace("{choice}", choice))) e.preventDefault();
  }, true);

  // ------------------------------------------------------------------ self-refreshing regions
  // <section id="x" data-refresh="10">: every 10 s (while the tab is visible and nobody is
  // typing in it) the page is fetched again and the region replaced by its new self. A region
  // that comes back with data-refresh="0" stops (a batch that is finished).
  function schedule(region) {
    const every = parseFloat(region.dataset.refresh || "0");
    if (!(every > 0) || !region.id) return;
    setTimeout(async () => {
      const live = document.getElementById(region.id);
      if (!live) return;
      const busy = live.contains(document.activeElement) && document.activeElement !== document.body;
      if (document.visibilityState !== "visible" || busy) { schedule(live); return; }
      try {
        const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (resp.redirected || !resp.ok) { schedule(live); return; }  // signed out: leave the page be
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const fresh = doc.getElementById(region.id);
        if (fresh) {
          const node = document.importNode(fresh, true);
          live.replaceWith(node);
          schedule(node);
          return;
        }
      } catch (err) { /* offline for a moment: try again next time */ }
      schedule(live);
    }, every * 1000);
  }
  document.querySelectorAll("[data-refresh]").forEach(schedule);
})();
