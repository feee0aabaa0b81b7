"""A batch's status as ``verge status BATCH`` shows it, and the ``--wait`` loop that polls a
batch until every image is scored or failed (``verge submit --wait``, ``verge demo``)."""
from __future__ import annotations

import sys
import time

from .clikit import UserError
from .settings import Settings

FAILURES_SHOWN = 1000  # failures `verge status BATCH` lists unless --failures says otherwise


def batch_status(settings: Settings, batch_ref, failures: int | None = FAILURES_SHOWN) -> dict:
    """The batch's counts and (the first ``failures``, None = all) failures: read once, when
    it is shown, never on every poll."""
    from store.db import session_scope
    from store.images import batch_counts, failed_images, find_batch

    with session_scope(settings.resolved_database_url) as s:
        batch = find_batch(s, batch_ref)
        if batch is None:
            raise UserError(f"no batch named or numbered {batch_ref!r}")
        counts = batch_counts(s, [batch.id]).get(batch.id, {})
        failed = failed_images(s, batch.id, limit=failures)
    st = {"batch": batch.name, "batch_id": batch.id, "total": counts.get("total", 0),
          "queued": counts.get("queued", 0) + counts.get("registered", 0),
          "scored": counts.get("scored", 0), "failed": counts.get("failed", 0),
          "routed": counts.get("routed", 0),
          "failures": [{"name": n, "reason": r} for n, r in failed]}
    if st["failed"] > len(failed):
        st["failures_not_listed"] = st["failed"] - len(failed)
    return st


def batch_progress(settings: Settings, batch_id: int) -> dict:
    """What ``--wait`` polls: the batch's counts per status, one cheap query."""
    from store.db import session_scope
    from store.images import batch_progress

    with session_scope(settings.resolved_database_url) as s:
        c = batch_progress(s, batch_id)
    return {"total": c["total"], "queued": c["queued"] + c["registered"], "scored": c["scored"],
            "failed": c["failed"]}


def status_line(st: dict) -> str:
    return (f"batch {st['batch']}: {st['total']} images, {st['scored']} scored, {st['failed']} failed, "
            f"{st['queued']} queued, {st['routed']} routed to review")


def wait_for_batch(settings: Settings, batch_id: int, timeout: float | None, quiet: bool = False) -> dict:
    """Poll until no image of the batch is queued (a progress bar on stderr unless ``quiet``),
    or until ``timeout`` seconds; then the batch's ``batch_status``."""
    from tqdm import tqdm

    started = time.monotonic()
    status = batch_progress(settings, batch_id)
    bar = tqdm(total=status["total"], desc="scoring", unit="img", disable=quiet or None, file=sys.stderr)
    hinted = False
    last_done, last_change = -1, time.monotonic()
    try:
        while True:
            done = status["scored"] + status["failed"]
            bar.update(done - bar.n)
            if status["queued"] == 0:
                return batch_status(settings, batch_id)
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            elif not hinted and not quiet and time.monotonic() - last_change > 60:
                bar.write("no progress for 60 s: is a worker running? (`verge worker`)")
                hinted = True
            if timeout is not None and time.monotonic() - started > timeout:
                bar.write(f"gave up waiting after {timeout:g} s; {status['queued']} images still queued")
                return batch_status(settings, batch_id)
            time.sleep(0.5)
            status = batch_progress(settings, batch_id)
    finally:
        bar.close()
