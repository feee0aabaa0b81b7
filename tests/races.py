"""Helpers for the race tests: run one side until a pause point, let the other side act, resume.

A test names a pause point (store/pausepoints.py) that production code reaches at the critical
moment (after a read, before the write that depends on it). ``interleave`` runs one side in a
thread, holds it at that point, runs the other side to completion, then lets the first finish:
the interleaving the issue reproduced, every time."""
from __future__ import annotations

import threading
from typing import Callable

from store.pausepoints import pausing

WAIT_S = 60


class _Outcome:
    def __init__(self):
        self.result = None
        self.error: BaseException | None = None

    def get(self):
        if self.error is not None:
            raise self.error
        return self.result


def _thread(fn, out: _Outcome) -> threading.Thread:
    def body():
        try:
            out.result = fn()
        except BaseException as exc:  # handed back to the test
            out.error = exc
    return threading.Thread(target=body, daemon=True)


def interleave(point: str, paused: Callable, meanwhile: Callable) -> _Outcome:
    """Run ``paused`` in a thread until it reaches ``point`` (the first time), run ``meanwhile``
    here, then let ``paused`` finish. Returns its outcome (``.get()`` re-raises its error)."""
    reached, go = threading.Event(), threading.Event()
    out = _Outcome()
    thread = _thread(paused, out)

    def hook():
        if threading.current_thread() is thread and not reached.is_set():
            reached.set()
            if not go.wait(WAIT_S):
                raise TimeoutError(f"{point}: never released")

    with pausing(point, hook):
        thread.start()
        while not reached.wait(0.05):
            if not thread.is_alive():
                raise AssertionError(f"pause point {point!r} was never reached "
                                     f"(the paused side ended: {out.error!r})")
        try:
            meanwhile()
        finally:
            go.set()
            thread.join(WAIT_S)
    assert not thread.is_alive(), f"the side paused at {point} hung"
    return out


def together(point: str, *sides: Callable) -> list[_Outcome]:
    """Run ``sides`` in threads that all wait for each other at ``point`` (a barrier), then go on
    at once: two writers that read the same state before either writes."""
    barrier = threading.Barrier(len(sides), timeout=WAIT_S)
    outs = [_Outcome() for _ in sides]
    threads = [_thread(fn, o) for fn, o in zip(sides, outs)]
    ours = set(threads)
    seen: set = set()

    def hook():
        me = threading.current_thread()
        if me in ours and me not in seen:
            seen.add(me)
            barrier.wait()

    with pausing(point, hook):
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads), f"a side hung at {point}"
    assert len(seen) == len(sides), f"pause point {point!r} was not reached by every side"
    return outs
