"""Reviewers under real contention on Postgres, shared by test_concurrency_pg and test_overlap_pg:
tasks seeded in bulk, reviewer threads released together by one barrier, and a reviewer that
works the queue through the web app's own endpoints until it is empty."""
from __future__ import annotations

import threading
import time
from typing import Callable

from store.db import session_scope

from .conftest import Seeder


def seed_tasks(seed: Seeder, n: int) -> list[int]:
    """n routed images in few transactions (blobs are irrelevant to claiming)."""
    from store.schema import Image, ReviewTask

    with session_scope(seed.url) as s:
        images = [Image(sha256=f"{i:064x}", storage_key=f"{i:064x}", source_name=f"img-{i}.jpg",
                        size_bytes=1, status="scored") for i in range(n)]
        s.add_all(images)
        s.flush()
        tasks = [ReviewTask(image_id=im.id, state="open", reasons="near_threshold",
                            priority=(i % 7) / 7) for i, im in enumerate(images)]
        s.add_all(tasks)
        s.flush()
        return [t.id for t in tasks]


def run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"


def side_by_side(sides: list[Callable[[], None]]) -> None:
    """Run each side in its own thread, all released at once by one barrier; fails if one hangs
    or raises (with what it raised)."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(sides))

    def body(side):
        try:
            start.wait()
            side()
        except Exception as exc:  # reported below
            errors.append(exc)

    run([threading.Thread(target=body, args=(side,)) for side in sides])
    assert not errors, errors


def web_reviewer(browser, label: dict, closed: bool = False, shown: list[int] | None = None,
                 still_wanted: Callable[[], bool] | None = None) -> Callable[[], None]:
    """A reviewer in the web app: claim, label with ``label`` (``closed``: the label must close
    the task), until the queue hands out nothing; the tasks it was shown go to ``shown``.
    ``still_wanted``: with overlap an empty claim may only mean another reviewer holds the task
    right now; the reviewer waits and asks again while this says a task still needs them."""
    def review() -> None:
        while True:
            r = browser.post("/review/api/claim", json={})
            assert r.status_code == 200, r.get_data(as_text=True)
            task = r.json["task"]
            if task is None:
                if still_wanted is not None and still_wanted():
                    time.sleep(0.05)
                    continue
                return
            if shown is not None:
                shown.append(task["task_id"])
            r = browser.post("/review/api/label", json={"task_id": task["task_id"], **label})
            assert r.status_code == 201 and (not closed or r.json["label"]["closed"]), \
                r.get_data(as_text=True)
    return review
