"""Named points in verge's concurrent paths where a test can pause one side of a race.

Production code calls ``reach("name")`` at the moment that matters (after a read, before the
write that depends on it); nothing is registered outside tests, so it costs one dict lookup.
A test registers a callable for a name (``with pausing("rescore.before_write", fn): ...``),
typically one that waits on a ``threading.Event`` while the other side runs."""
from __future__ import annotations

import contextlib
from typing import Callable

_hooks: dict[str, Callable[[], None]] = {}


def reach(name: str) -> None:
    hook = _hooks.get(name)
    if hook is not None:
        hook()


@contextlib.contextmanager
def pausing(name: str, hook: Callable[[], None]):
    _hooks[name] = hook
    try:
        yield
    finally:
        _hooks.pop(name, None)
