// The review page: claim a task, show it, label it with a key, and have the next one ready.
// The page holds at most two claims: the task on screen and the prefetched next one, whose
// image is already downloaded and decoded, so a label swaps the picture instantly.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const root = $("review");
  const cfg = root.dataset;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const band = [parseFloat(cfg.bandLow), parseFloat(cfg.bandHigh)];
  const NAMES = { field: "Field", road: "Road", road_and_field: "Road & field" };
  const KEYS = { "1": "field", "2": "road", "3": "road_and_field" };

  let current = null;      // task on screen
  let next = null;         // prefetched task
  let nextPromise = null;  // its claim in flight
  let shownAt = 0;         // when the current image appeared (time on item)
  let busy = false;
  let waiting = parseInt(cfg.waiting, 10) || 0;
  let pollTimer = null;
  // What this reviewer did in this tab, newest last, kept across reloads so `u` can take any
  // of it back: {kind: "label", label_id, cls} or {kind: "skip", task_id}.
  const STORE = `verge-review-actions:${cfg.user}`;
  const history = loadHistory();
  const times = [];
  let zoom = "fit";

  function loadHistory() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE) || "[]");
      return Array.isArray(saved) ? saved.slice(-200) : [];
    } catch (e) { return []; }
  }
  function saveHistory() {
    try { sessionStorage.setItem(STORE, JSON.stringify(history.slice(-200))); } catch (e) { /* private mode */ }
  }
  const labeledCount = () => history.filter((a) => a.kind === "label").length;

  // ------------------------------------------------------------------ server calls
  async function post(url, data) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(data || {}),
    });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401) { window.location.href = cfg.loginUrl; throw new Error("signed out"); }
    if (!resp.ok && resp.status !== 409) {
      const err = new Error((body && body.error) || `the server answered ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return { status: resp.status, body };
  }

  async function claim(exclude) {
    const { body } = await post(cfg.claimUrl, { exclude: exclude || [] });
    setWaiting(body.waiting);
    return body.task;
  }

  function setWaiting(n) {
    if (typeof n !== "number") return;
    waiting = n;
    $("waiting").textContent = String(Math.max(0, waiting));
  }

  function preload(task) {
    if (!task || task.img) return;
    const img = new Image();
    img.src = task.image_url;
    task.img = img;
    task.ready = (img.decode ? img.decode() : Promise.resolve()).catch(() => null);
  }

  function prefetch() {
    next = null;
    if (!current) { nextPromise = null; return; }
    const p = claim([current.task_id]).then((t) => {
      if (nextPromise === p) { next = t; preload(t); }
      return t;
    }).catch(() => null);
    nextPromise = p;
  }

  async function takeNext() {
    if (nextPromise) await nextPromise;
    const t = next;
    next = null; nextPromise = null;
    return t;
  }

  // ------------------------------------------------------------------ drawing
  function gauge(id, p) {
    const g = $(id);
    const fill = g.querySelector(".fill"), bandEl = g.querySelector(".band");
    bandEl.style.left = `${band[0] * 100}%`;
    bandEl.style.width = `${(band[1] - band[0]) * 100}%`;
    g.classList.toggle("none", p === null || p === undefined);
    fill.style.width = p === null || p === undefined ? "0%" : `${Math.max(0, Math.min(1, p)) * 100}%`;
  }

  function fmt(p) { return p === null || p === undefined ? "—" : p.toFixed(3); }

  function chip(text, cls) {
    const s = document.createElement("span");
    s.className = `chip ${cls || ""}`;
    s.textContent = text;
    return s;
  }

  function setButtons(on) {
    document.querySelectorAll("#keys button[data-class], #skip").forEach((b) => { b.disabled = !on; });
  }

  function show(task) {
    const photo = $("photo");
    $("loading").hidden = true;
    if (!task) {
      current = null;
      photo.hidden = true;
      photo.removeAttribute("src");
      $("empty").hidden = false;
      $("task-meta").textContent = "\u00a0";
      $("fname").textContent = "Nothing to review";
      $("batches").textContent = "";
      $("reasons").replaceChildren();
      gauge("head-gauge", null); gauge("zs-gauge", null);
      $("head-val").textContent = "—"; $("zs-val").textContent = "—";
      $("head-class").textContent = "\u00a0"; $("zs-class").textContent = "\u00a0";
      setButtons(false);
      $("item-link").hidden = true;
      $("zoom").hidden = true;
      poll();
      return;
    }
    stopPoll();
    current = task;
    $("empty").hidden = true;
    photo.hidden = false;
    shownAt = performance.now();
    photo.onload = () => { shownAt = performance.now(); describeSize(); };
    photo.src = task.image_url;
    photo.alt = `image ${task.image_id}: ${task.source_name}`;
    $("task-meta").textContent = `Task #${task.task_id} · image #${task.image_id} · priority ${task.priority.toFixed(2)}`;
    // the whole path: fields/1.jpg and roads/1.jpg are different images
    $("fname").textContent = task.source_name;
    $("fname").title = task.source_name;
    $("zoom").hidden = false;
    setZoom(zoom);
    $("batches").textContent = task.batches.length ? `Batch ${task.batches.join(", ")}` : "";
    const reasons = $("reasons");
    reasons.replaceChildren(...task.reasons.map((r) => chip(r.replace(/_/g, " "), `reason-${r}`)));
    const p = task.prediction;
    const head = p ? p.head_p_road : null;
    gauge("head-gauge", head);
    $("head-val").textContent = fmt(head);
    $("head-class").textContent = head === null || head === undefined
      ? "no head active: zero-shot only" : `says ${NAMES[p.predicted_class] || p.predicted_class}`;
    const zs = p ? p.zs_p_road : null;
    gauge("zs-gauge", zs);
    $("zs-val").textContent = fmt(zs);
    $("zs-class").textContent = p ? `says ${NAMES[p.zs_class] || p.zs_class}` : "\u00a0";
    $("item-link").href = task.item_url;
    $("item-link").hidden = false;
    setButtons(true);
    document.dispatchEvent(new CustomEvent("verge:task", { detail: task }));  // similar.js
  }

  // ------------------------------------------------------------------ zoom
  // fit: the whole image in the stage (small photos are scaled up); 1 / 2: native pixels,
  // or twice that, scrolled inside the stage. The resolution and the scale shown are always said.
  function describeSize() {
    const photo = $("photo");
    const w = photo.naturalWidth, h = photo.naturalHeight;
    if (!w) { $("resolution").textContent = ""; return; }
    const shown = photo.getBoundingClientRect().width / w;
    $("resolution").textContent = `${w} × ${h} px · shown at ${Math.round(shown * 100)}%`;
  }

  function setZoom(mode) {
    zoom = mode;
    const view = $("stage-view"), photo = $("photo");
    view.classList.toggle("native", mode !== "fit");
    if (mode === "fit") { photo.style.width = ""; photo.style.height = ""; }
    else if (photo.naturalWidth) {
      photo.style.width = `${photo.naturalWidth * Number(mode)}px`;
      photo.style.height = `${photo.naturalHeight * Number(mode)}px`;
    }
    document.querySelectorAll("#zoom button").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.zoom === mode));
    });
    requestAnimationFrame(describeSize);
  }
  function cycleZoom() { setZoom({ fit: "1", 1: "2", 2: "fit" }[zoom] || "fit"); }
  window.addEventListener("resize", describeSize);

  function stats() {
    $("done").textContent = String(labeledCount());
    if (times.length) {
      const s = [...times].sort((a, b) => a - b);
      $("pace").textContent = (s[Math.floor(s.length / 2)] / 1000).toFixed(1);
    }
    $("waiting").textContent = String(Math.max(0, waiting));
  }

  let toastTimer = null;
  function toast(text, kind) {
    const t = $("toast");
    t.textContent = text;
    t.className = `toast ${kind || "info"}`;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, kind === "error" ? 8000 : 3500);
  }

  function pulse(selector) {
    const b = document.querySelector(selector);
    if (!b) return;
    b.classList.add("pressed");
    setTimeout(() => b.classList.remove("pressed"), 160);
  }

  // ------------------------------------------------------------------ actions
  async function advance() {
    let t = await takeNext();
    if (!t) t = await claim([]).catch(() => null);
    show(t);
    prefetch();
  }

  async function label(cls) {
    if (busy || !current) return;
    busy = true;
    pulse(`#keys button[data-class="${cls}"]`);
    const task = current;
    const ms = Math.round(performance.now() - shownAt);
    try {
      const { status, body } = await post(cfg.labelUrl, { task_id: task.task_id, class: cls, time_on_item_ms: ms });
      if (status === 409) { toast(body.error, "warn"); return; }
      if (status === 201) {
        history.push({ kind: "label", label_id: body.label.label_id, cls, task_id: task.task_id });
        saveHistory();
        times.push(ms);
      }
      if (!body.label.closed && status === 201) {
        toast("Kept as an extra label: another reviewer holds this image now.", "info");
      } else {
        toast(`Saved “${NAMES[cls]}” for image #${task.image_id}. U undoes it.`, "ok");
      }
      stats();
      await advance();
    } catch (e) {
      toast(`Not saved: ${e.message}. Press the key again.`, "error");
    } finally {
      busy = false;
    }
  }

  async function skip() {
    if (busy || !current) return;
    busy = true;
    pulse("#skip");
    const task = current;
    try {
      await post(cfg.skipUrl, { task_id: task.task_id });
      history.push({ kind: "skip", task_id: task.task_id, image_id: task.image_id });
      saveHistory();
      toast(`Skipped image #${task.image_id}: someone else will get it. U takes the skip back.`, "info");
      await advance();
    } catch (e) {
      toast(`Skip failed: ${e.message}`, "error");
    } finally {
      busy = false;
    }
  }

  // The undone task comes back on screen; the one on screen becomes "next" and the
  // prefetched one goes back to the queue.
  async function bringBack(task) {
    if (nextPromise) await nextPromise;
    if (next) await post(cfg.releaseUrl, { task_ids: [next.task_id] }).catch(() => null);
    next = current; nextPromise = null;
    preload(next);
    show(task);
  }

  async function undo() {
    if (busy) return;
    busy = true;
    pulse("#undo");
    const last = history.pop();
    try {
      if (last && last.kind === "skip") {
        const { body } = await post(cfg.undoUrl, { skip_task_id: last.task_id });
        saveHistory();
        if (body.task) {
          await bringBack(body.task);
          toast(`Took back the skip of image #${last.image_id}: it is yours again.`, "info");
        } else {
          toast(`Took back the skip of image #${last.image_id}, but another reviewer has it now.`, "warn");
        }
        return;
      }
      const { body } = await post(cfg.undoUrl, last ? { label_id: last.label_id } : {});
      saveHistory();
      if (last) times.pop();
      const was = NAMES[body.undone.class] || body.undone.class;
      if (body.task) {
        await bringBack(body.task);
        toast(`Undid “${was}”: label it again.`, "info");
      } else {
        toast(`Removed your “${was}” label.`, "info");
      }
      stats();
    } catch (e) {
      if (e.status === 404 && last) { saveHistory(); toast("That action can no longer be undone.", "info"); }
      else {
        if (last) history.push(last);
        toast(e.status === 404 ? "Nothing to undo." : `Undo failed: ${e.message}`, e.status === 404 ? "info" : "error");
      }
    } finally {
      busy = false;
    }
  }

  // ------------------------------------------------------------------ the empty queue, leases
  function poll() {
    if (pollTimer) return;
    pollTimer = setInterval(async () => {
      const t = await claim([]).catch(() => null);
      if (t) { stopPoll(); show(t); prefetch(); }
    }, 15000);
  }
  function stopPoll() { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }

  const held = () => [current, next].filter(Boolean).map((t) => t.task_id);
  setInterval(() => {
    if (held().length) {
      post(cfg.renewUrl, { task_ids: held() }).then(({ body }) => {
        setWaiting(body.waiting);
        [current, next].forEach((t) => {
          if (t && body.leases && body.leases[t.task_id]) t.lease_expires_at = body.leases[t.task_id];
        });
      }).catch(() => null);
    }
  }, Math.max(10, parseInt(cfg.lease, 10) / 3) * 1000);
  // the "waiting" counter follows the other reviewers too
  setInterval(async () => {
    if (document.visibilityState !== "visible") return;
    try {
      const resp = await fetch(cfg.waitingUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.ok) setWaiting((await resp.json()).waiting);
    } catch (e) { /* next time */ }
  }, 15000);

  // Signing out: hand the claims back first (while the session still holds), then sign out.
  const signOut = document.getElementById("sign-out");
  if (signOut) {
    signOut.addEventListener("submit", async (e) => {
      e.preventDefault();
      const ids = held();
      current = null; next = null; nextPromise = null;
      stopPoll();
      if (ids.length) await post(cfg.releaseUrl, { task_ids: ids }).catch(() => null);
      signOut.submit();
    });
  }

  window.addEventListener("pagehide", () => {
    // Hand the claims back so nobody waits for the lease to run out.
    const ids = held();
    if (!ids.length || !navigator.sendBeacon) return;
    const form = new FormData();
    form.append("csrf_token", csrf);
    form.append("task_ids", ids.join(","));
    // the leases as this page last saw them: a reload's new page may take the same tasks again
    // before this beacon arrives, and its later leases must survive it
    const seen = {};
    [current, next].filter((t) => t && t.lease_expires_at).forEach((t) => { seen[t.task_id] = t.lease_expires_at; });
    form.append("leases", JSON.stringify(seen));
    navigator.sendBeacon(cfg.releaseUrl, form);
  });

  // ------------------------------------------------------------------ input
  const dialog = $("guidelines");
  function toggleGuidelines() {
    if (dialog.open) dialog.close(); else dialog.showModal();
  }
  $("guidelines-link").addEventListener("click", (e) => { e.preventDefault(); toggleGuidelines(); });
  $("guidelines-close").addEventListener("click", () => dialog.close());
  document.querySelectorAll("#zoom button").forEach((b) => {
    b.addEventListener("click", () => setZoom(b.dataset.zoom));
  });

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    if (e.key === "?") { e.preventDefault(); toggleGuidelines(); return; }
    if (dialog.open) return;  // reading the guidelines: no labels by accident
    const k = e.key.toLowerCase();
    if (k === "z") { e.preventDefault(); cycleZoom(); return; }
    if (KEYS[k]) { e.preventDefault(); label(KEYS[k]); }
    else if (k === "s") { e.preventDefault(); skip(); }
    else if (k === "u") { e.preventDefault(); undo(); }
  });
  document.querySelectorAll("#keys button[data-class]").forEach((b) => {
    b.addEventListener("click", () => { label(b.dataset.class); b.blur(); });
  });
  $("skip").addEventListener("click", (e) => { skip(); e.currentTarget.blur(); });
  $("undo").addEventListener("click", (e) => { undo(); e.currentTarget.blur(); });

  // ------------------------------------------------------------------ start
  (async () => {
    try {
      show(await claim([]));
      prefetch();
    } catch (e) {
      $("loading").textContent = `Could not load the queue: ${e.message}`;
    }
  })();
})();
