"""A real browser: sign in, label three routed images with the keyboard (one of each class),
undo one, and check the database. Saves test-artifacts/review.png."""
from __future__ import annotations

from sqlalchemy import select

from store.db import session_scope
from store.schema import Label, ReviewTask

from .livebrowser import (  # noqa: F401  (the fixtures)
    ARTIFACTS, chromium, live_app, on_screen, picture, submit_login, watch_errors,
)


def test_label_three_images_with_the_keyboard_and_undo_one(live_app, chromium, seed):
    live_server, _ = live_app
    seed.user("ann")
    routed = [  # (priority, head p(road), zero-shot p(road), reasons, picture)
        (0.96, 0.52, 0.31, "near_threshold,disagreement", "field"),
        (0.90, 0.45, 0.62, "near_threshold,disagreement", "road"),
        (0.80, 0.58, 0.55, "near_threshold", "road_and_field"),
        (0.30, 0.85, 0.81, "audit", "road"),
    ]
    tasks = []
    for i, (prio, head, zs, reasons, kind) in enumerate(routed):
        iid = seed.image(picture(kind, i), name=f"survey/june/{kind}-{i:03d}.jpg", batch="june-survey")
        pid = seed.predict(iid, head, zs, reasons)
        tasks.append(seed.task(iid, prio, reasons, pid))

    page = chromium.new_page(viewport={"width": 1360, "height": 820})
    errors = watch_errors(page)
    page.goto(f"{live_server}/review")
    assert "/login" in page.url
    submit_login(page, "ann")
    page.wait_for_url(f"{live_server}/review")

    on_screen(page, tasks[0])
    page.wait_for_timeout(150)
    page.keyboard.press("1")
    on_screen(page, tasks[1])
    page.keyboard.press("2")
    on_screen(page, tasks[2])
    page.keyboard.press("3")
    on_screen(page, tasks[3])
    page.keyboard.press("u")            # undo "road & field": task 3 comes back
    on_screen(page, tasks[2])
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
