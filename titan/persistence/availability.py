"""What the event-log backends share about a failing disk: `unavailable` (why records
cannot be stored now, or None), the callbacks `watch` registers (told the reason when storing
stops, None when it works again), a probe (the backend's `_probe`) retried with backoff, and
a pause in compactions after one failed."""
from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer

from titan.interfaces import StorageUnavailable

RETRY_FIRST = 0.1  # seconds before the first retry of a failed write or commit; doubled up
RETRY_MAX = 5.0  # to this
COMPACTION_PAUSE = 30.0  # seconds without compactions after one failed


def why(action: str, path: str, error: BaseException) -> str:
    """One line for an OSError: 'cannot write PATH: No space left on device'."""
    if isinstance(error, OSError) and error.strerror:
        return f"cannot {action} {path}: {error.strerror}"
    return f"cannot {action} {path}: {error}"


class Availability:
    """Mixin for a backend with `reactor`, `log`, `_probe()` and `_closing()` (True once
    it is closing)."""

    def _init_availability(self) -> None:
        self.unavailable: Optional[str] = None  # why records cannot be stored now
        self._watchers: list[Callable] = []
        self._retry_call = None
        self.retry_first, self.retry_max = RETRY_FIRST, RETRY_MAX
        self._retry_delay = RETRY_FIRST
        self._no_compaction_until = 0.0

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

    def _cannot_compact(self) -> Optional[defer.Deferred]:
        """A failed Deferred if no compaction may start now (None if one may)."""
        if self.unavailable is not None:
            return defer.fail(StorageUnavailable(self.unavailable))
        if self.reactor.seconds() < self._no_compaction_until:
            return defer.fail(StorageUnavailable("compactions paused after a failure"))
        return None

    def _pause_compactions(self, reason: str) -> None:
        self._no_compaction_until = self.reactor.seconds() + COMPACTION_PAUSE
        self.log.warn("compaction failed ({reason}); the log stays as it was; trying again "
                      "in {pause:.0f}s", reason=reason, pause=COMPACTION_PAUSE)
