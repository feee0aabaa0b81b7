"""A real browser: sign in, label three routed images with the keyboard (one of each class),
undo one, and check the database. Saves test-artifacts/review.png."""
from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from store.db import session_scope
from store.schema import Label, ReviewTask

from .conftest import PASSWORD, make_app, need

CHROMIUM = os.environ.get("VERGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _picture(kind: str, seed: int) -> bytes:
    """Stand-ins that look like the real thing: a field, a road, a road through a field."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 480, 720
    img = np.zeros((h, w, 3), np.float32)
    img[: h // 3] = np.array([150, 190, 235]) + np.linspace(0, 30, h // 3)[:, None, None]
    img[h // 3:] = np.array([86, 146, 58]) + rng.normal(0, 16, (h - h // 3, w, 3))
    if kind in ("road", "road_and_field"):
        for y in range(h // 3, h):
            half = int((y - h // 3) / (h - h // 3) * w * (0.45 if kind == "road" else 0.18)) + 2
            cx = w // 2
            img[y, cx - half:cx + half] = 96 + rng.normal(0, 5, (2 * half, 3))
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
    return buf.getvalue()


@pytest.fixture
def live_server(web_settings):
    from werkzeug.serving import make_server

    app = make_app(web_settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def browser():
    need("Chromium", Path(CHROMIUM).exists() or bool(shutil.which(CHROMIUM)),
         f"no browser at {CHROMIUM} (apt-get install chromium, or set VERGE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        need("Playwright", False, "pip install playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_label_three_images_with_the_keyboard_and_undo_one(live_server, browser, seed):
    seed.user("ann")
    routed = [  # (priority, head p(road), zero-shot p(road), reasons, picture)
        (0.96, 0.52, 0.31, "near_threshold,disagreement", "field"),
        (0.90, 0.45, 0.62, "near_threshold,disagreement", "road"),
        (0.80, 0.58, 0.55, "near_threshold", "road_and_field"),
        (0.30, 0.85, 0.81, "audit", "road"),
    ]
    tasks = []
    for i, (prio, head, zs, reasons, kind) in enumerate(routed):
        iid = seed.image(_picture(kind, i), name=f"survey/june/{kind}-{i:03d}.jpg", batch="june-survey")
        pid = seed.predict(iid, head, zs, reasons)
        tasks.append(seed.task(iid, prio, reasons, pid))

    page = browser.new_page(viewport={"width": 1360, "height": 820})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server}/review")
    assert "/login" in page.url
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/review")

    def on_screen(task_id: int):
        page.wait_for_function(
            "(id) => document.getElementById('task-meta').textContent.startsWith('Task #' + id + ' ')"
            " && document.getElementById('photo').complete"
            " && document.getElementById('photo').naturalWidth > 0", arg=task_id)

    on_screen(tasks[0])
    page.wait_for_timeout(150)
    page.keyboard.press("1")
    on_screen(tasks[1])
    page.keyboard.press("2")
    on_screen(tasks[2])
    page.keyboard.press("3")
    on_screen(tasks[3])
    page.keyboard.press("u")            # undo "road & field": task 3 comes back
    on_screen(tasks[2])
    page.wait_for_function("() => document.getElementById('done').textContent === '2'")
    page.wait_for_selector("#toast:not([hidden])")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review.png"))
    assert not errors, errors

    with session_scope(seed.url) as s:
        labels = [(lab.task_id, lab.cls, lab.source, lab.user_id) for lab in
                  s.scalars(select(Label).order_by(Label.id))]
        states = {t.id: (t.state, t.lease_owner) for t in s.scalars(select(ReviewTask))}
        times = [lab.time_on_item_ms for lab in s.scalars(select(Label))]
    uid = seed.users["ann"]
    assert labels == [(tasks[0], "field", "review", uid), (tasks[1], "road", "review", uid)]
    assert all(t is not None and t >= 0 for t in times)
    assert states[tasks[0]] == ("done", "ann") and states[tasks[1]] == ("done", "ann")
    assert states[tasks[2]] == ("claimed", "ann")   # back on screen after the undo
    assert states[tasks[3]] == ("claimed", "ann")   # prefetched as the next one
    page.close()
