"""Reloading the review page in a real browser: the old page hands its claims back with a
pagehide beacon, and that beacon may reach the server after the new page has claimed. Forced
here: the beacon is held until the new page shows its task, then let through. The new page's
task must still be the reviewer's afterwards (the old release must not free it).

The page's beacon names the leases as it last saw them (``leases``); the reloaded page's
claims renew them, so the late release ends none of the new page's leases. A release when the
page is really left still hands both tasks back."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from store import pausepoints
from store.db import session_scope
from store.schema import ReviewTask

from .conftest import make_app
from .livebrowser import chromium, serve, sign_in, watch_errors  # noqa: F401  (chromium: the fixture)


@pytest.fixture
def live(web_settings):
    with serve(make_app(web_settings, gold_fraction=0.0)) as base:
        yield base


def _claimed_by(url: str, owner: str) -> set[int]:
    with session_scope(url) as s:
        return set(s.scalars(select(ReviewTask.id).where(ReviewTask.state == "claimed",
                                                         ReviewTask.lease_owner == owner)))


def _until(pred, page, what: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        page.wait_for_timeout(100)  # lets Playwright dispatch events (the held beacon) meanwhile
    raise AssertionError(f"timed out waiting for {what}")


def _shown(page) -> int | None:
    text = page.inner_text("#task-meta")
    return int(text.split("#", 1)[1].split()[0]) if text.startswith("Task #") else None


def test_the_old_pages_late_release_does_not_free_the_reloaded_pages_claim(live, chromium, seed):
    seed.user("ann")
    tids = [seed.routed(0.9 - 0.1 * i)[1] for i in range(5)]
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = watch_errors(page)
    sign_in(page, live, "ann")
    _until(lambda: _shown(page) == tids[0], page, "the first task on screen")
    old = _until(lambda: (lambda c: c if len(c) == 2 else None)(_claimed_by(seed.url, "ann")),
                 page, "the prefetched claim")
    assert old == {tids[0], tids[1]}

    arrived, go, landed = threading.Event(), threading.Event(), threading.Event()

    def hold_first_release():
        if not arrived.is_set():
            arrived.set()
            assert go.wait(30), "the test never let the release through"

    with pausepoints.pausing("review.release", hold_first_release), \
            pausepoints.pausing("review.released", landed.set):
        page.reload()
        _until(lambda: arrived.is_set(), page, "the old page's release beacon")
        _until(lambda: _shown(page), page, "a task on the reloaded page")
        new = _shown(page)

        def prefetched():  # the task on screen and the next one, claimed by the new page
            c = _claimed_by(seed.url, "ann")
            return new in c and len(c - old) == (0 if new in old else 2)
        _until(prefetched, page, "the reloaded page's two claims")
        # the new page shows its task and holds its claims; now the old page's release lands
        go.set()
        _until(lambda: landed.is_set(), page, "the old page's release to land")
    shown = _shown(page)
    mine = _claimed_by(seed.url, "ann")
    assert shown in mine, (f"task {shown} is on the reloaded page but no longer claimed "
                           f"(ann holds {sorted(mine)})")
    assert mine == old  # the reload took the same two back (own claims first), and keeps both

    page.goto(f"{live}/browse")  # really leaving: this page's beacon hands both back
    _until(lambda: not _claimed_by(seed.url, "ann"), page, "the release on leaving")
    with session_scope(seed.url) as s:
        states = dict(s.execute(select(ReviewTask.id, ReviewTask.state)
                                .where(ReviewTask.id.in_(old))).all())
    assert states == {t: "open" for t in old}
    assert not errors, errors
    context.close()
