"""What the event-log backends share about a failing disk: `unavailable` (why records
cannot be stored now, or None), the callbacks `watch` registers (told the reason when storing
stops, None when it works again), and a probe (the backend's `_probe`) retried with backoff."""
from __future__ import annotations

from typing import Callable, Optional

RETRY_FIRST = 0.1  # seconds before the first retry of a failed write or commit; doubled up
RETRY_MAX = 5.0  # to this


class Availability:
    """Mixin for a backend with `reactor`, `_probe()` and `_closing()` (True once closing)."""

    def _init_availability(self) -> None:
        self.unavailable: Optional[str] = None  # why records cannot be stored now
        self._watchers: list[Callable] = []
        self._retry_call = None
        self.retry_first, self.retry_max = RETRY_FIRST, RETRY_MAX
        self._retry_delay = RETRY_FIRST

    def watch(self, callback: Callable) -> None:
        self._watchers.append(callback)

    def _trouble(self, reason: str) -> None:
        """Storing stopped working: say so once, and retry with backoff."""
        if self.unavailable is None:
            self.unavailable = reason
            for callback in list(self._watchers):
                callback(reason)
        if self._retry_call is None and not self._closing():
            self._retry_call = self.reactor.callLater(self._retry_delay, self._probe)
            self._retry_delay = min(self._retry_delay * 2, self.retry_max)

    def _recovered(self) -> None:
        """Storing works again: say so once, and start the backoff over."""
        if self.unavailable is None:
            return
        self.unavailable = None
        self._retry_delay = self.retry_first
        for callback in list(self._watchers):
            callback(None)

    def _probe_in(self, delay: float) -> None:
        """Probe again after `delay` (the backoff unchanged)."""
        self._retry_call = self.reactor.callLater(delay, self._probe)

    def _stop_probing(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
