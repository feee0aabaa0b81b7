// Similar images under the one on screen (webui/similar.py): select several by keyboard or
// click and label them in one action. Listens for review.js's "verge:task" event.
(() => {
  "use strict";
  const root = document.getElementById("similar");
  if (!root) return;
  const cfg = root.dataset;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const grid = document.getElementById("similar-grid");
  const note = document.getElementById("similar-note");
  const CODES = { Digit1: "field", Digit2: "road", Digit3: "road_and_field" };
  const NAMES = { field: "Field", road: "Road", road_and_field: "Road & field" };
  let token = null;
  let items = [];       // [{image_id, el, selected, done}]
  let focus = 0;
  let lastBulk = null;  // label ids of the last bulk action
  let taskId = null;
  let busy = false;

  async function post(url, data) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(data),
    });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) throw new Error((body && body.error) || `the server answered ${resp.status}`);
    return body;
  }

  function fmt(p) { return p === null || p === undefined ? "—" : p.toFixed(2); }

  function refresh() {
    const n = items.filter((it) => it.selected).length;
    root.querySelectorAll(".n-selected").forEach((s) => { s.textContent = String(n); });
    root.querySelectorAll("button[data-bulk-class]").forEach((b) => { b.disabled = n === 0; });
    document.getElementById("bulk-undo").disabled = !lastBulk;
    items.forEach((it, i) => {
      it.el.classList.toggle("selected", it.selected);
      it.el.classList.toggle("focused", i === focus);
      it.el.setAttribute("aria-selected", it.selected ? "true" : "false");
    });
  }

  function render(data) {
    token = data.token;
    grid.replaceChildren();
    items = data.images.map((im) => {
      const el = document.createElement("button");
      el.type = "button";
      el.className = "similar-item";
      el.setAttribute("role", "option");
      el.dataset.imageId = im.image_id;
      el.title = im.source_name;
      const img = document.createElement("img");
      img.src = im.thumb_url; img.alt = `similar image ${im.image_id}`; img.loading = "lazy";
      const cap = document.createElement("span");
      cap.className = "similar-cap small";
      cap.textContent = `sim ${im.similarity.toFixed(2)} · head ${fmt(im.head_p_road)} · zs ${fmt(im.zs_p_road)}`;
      el.append(img, cap);
      const it = { image_id: im.image_id, el, selected: false, done: false };
      el.addEventListener("click", () => { if (!it.done) { it.selected = !it.selected; focus = items.indexOf(it); refresh(); } el.blur(); });
      grid.append(el);
      return it;
    });
    focus = 0;
    document.getElementById("similar-count").textContent = items.length ? `(${items.length})` : "";
    root.hidden = items.length === 0;
    refresh();
  }

  async function load(task) {
    taskId = task.task_id;
    try {
      const resp = await fetch(`${cfg.similarUrl}?task_id=${task.task_id}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) { root.hidden = true; return; }
      const data = await resp.json();
      if (taskId === task.task_id) render(data);
    } catch (e) { root.hidden = true; }
  }

  async function bulk(cls) {
    const chosen = items.filter((it) => it.selected && !it.done);
    if (busy || !chosen.length) return;
    busy = true;
    try {
      const body = await post(cfg.bulkUrl, { token, image_ids: chosen.map((it) => it.image_id), class: cls });
      const ok = new Set(body.labeled.map((l) => l.image_id));
      chosen.forEach((it) => {
        it.selected = false;
        if (ok.has(it.image_id)) { it.done = true; it.el.classList.add("labeled", `cls-${cls}`); it.el.disabled = true; }
      });
      lastBulk = body.labeled.map((l) => l.label_id);
      note.textContent = `Labeled ${body.labeled.length} as ${NAMES[cls]}` +
        (body.skipped.length ? `; passed over ${body.skipped.length} (${body.skipped[0].reason})` : "") + ".";
    } catch (e) {
      note.textContent = `Not saved: ${e.message}`;
    } finally {
      busy = false;
      refresh();
    }
  }

  async function undoBulk() {
    if (busy || !lastBulk) return;
    busy = true;
    try {
      const body = await post(cfg.bulkUndoUrl, { label_ids: lastBulk });
      note.textContent = `Undid ${body.undone} bulk labels.`;
      lastBulk = null;
      items.forEach((it) => { if (it.done) { it.done = false; it.el.disabled = false; it.el.className = "similar-item"; } });
    } catch (e) {
      note.textContent = `Undo failed: ${e.message}`;
    } finally {
      busy = false;
      refresh();
    }
  }

  document.addEventListener("verge:task", (e) => { lastBulk = null; note.textContent = ""; load(e.detail); });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || root.hidden) return;
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    if (e.shiftKey && CODES[e.code]) { e.preventDefault(); e.stopImmediatePropagation(); bulk(CODES[e.code]); return; }
    if (e.shiftKey) return;
    if (!items.length) return;
    const k = e.key.toLowerCase();
    if (e.key === "ArrowRight") { e.preventDefault(); focus = Math.min(items.length - 1, focus + 1); refresh(); }
    else if (e.key === "ArrowLeft") { e.preventDefault(); focus = Math.max(0, focus - 1); refresh(); }
    else if (k === "x") { e.preventDefault(); const it = items[focus]; if (it && !it.done) { it.selected = !it.selected; refresh(); } }
    else if (k === "a") { e.preventDefault(); const all = items.filter((it) => !it.done).every((it) => it.selected); items.forEach((it) => { if (!it.done) it.selected = !all; }); refresh(); }
    else if (k === "z") { e.preventDefault(); undoBulk(); }
  }, true);
  root.querySelectorAll("button[data-bulk-class]").forEach((b) => {
    b.addEventListener("click", () => { bulk(b.dataset.bulkClass); b.blur(); });
  });
  document.getElementById("bulk-undo").addEventListener("click", (e) => { undoBulk(); e.currentTarget.blur(); });
})();
