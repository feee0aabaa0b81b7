"""Slows down password guessing: after a few failed logins from one address or for one name,
further attempts are refused (HTTP 429) for a while that doubles with each failure.

Kept in process memory: each server process counts on its own, so N gunicorn workers allow
N times the attempts. That still turns a guessing attack from thousands of tries a second into
a handful a minute.
"""
from __future__ import annotations

import threading
import time


class LoginThrottle:
    def __init__(self, free_failures: int = 5, base_s: float = 30.0, max_s: float = 900.0,
                 forget_after_s: float = 3600.0, clock=time.monotonic):
        self.free = free_failures
        self.base = base_s
        self.max = max_s
        self.forget = forget_after_s
        self.clock = clock
        self._fails: dict[str, tuple[int, float]] = {}   # key -> (failures, last failure time)
        self._lock = threading.Lock()

    def wait_s(self, *keys: str) -> float:
        """Seconds until these keys may try again (0: go ahead)."""
        now = self.clock()
        with self._lock:
            return max((self._wait(k, now) for k in keys), default=0.0)

    def _wait(self, key: str, now: float) -> float:
        n, last = self._fails.get(key, (0, 0.0))
        if n < self.free:
            return 0.0
        lock = min(self.max, self.base * 2 ** (n - self.free))
        return max(0.0, last + lock - now)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._fails) > 10_000:  # forget the stale ones; bounded memory
                self._fails = {k: v for k, v in self._fails.items() if now - v[1] < self.forget}
            for k in keys:
                n, last = self._fails.get(k, (0, now))
                self._fails[k] = (1 if now - last > self.forget else n + 1, now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._fails.pop(k, None)
