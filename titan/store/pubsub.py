"""Publish/subscribe: who listens to which channel or pattern.  Pure: subscribers are any
objects with `push(bytes)` and `push_kind` (b"*": a RESP2 array, b">": a RESP3 push) —
the server's connections.
"""
from __future__ import annotations

from typing import Callable, Optional

from titan.store.data import glob_matcher


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


class Hub:
    def __init__(self) -> None:
        self.channels: dict[bytes, dict] = {}   # channel -> {subscriber: None} (ordered)
        self.patterns: dict[bytes, tuple[Optional[Callable], dict]] = {}
        self.messages = 0  # messages delivered (stats)

    def subscribe(self, subscriber, channel: bytes) -> bool:
        """True if it was not subscribed yet."""
        subs = self.channels.get(channel)
        if subs is None:
            subs = self.channels[channel] = {}
        elif subscriber in subs:
            return False
        subs[subscriber] = None
        return True

    def unsubscribe(self, subscriber, channel: bytes) -> bool:
        subs = self.channels.get(channel)
        if subs is None or subscriber not in subs:
            return False
        del subs[subscriber]
        if not subs:
            del self.channels[channel]
        return True

    def psubscribe(self, subscriber, pattern: bytes) -> bool:
        entry = self.patterns.get(pattern)
        if entry is None:
            entry = self.patterns[pattern] = (glob_matcher(pattern), {})
        elif subscriber in entry[1]:
            return False
        entry[1][subscriber] = None
        return True

    def punsubscribe(self, subscriber, pattern: bytes) -> bool:
        entry = self.patterns.get(pattern)
        if entry is None or subscriber not in entry[1]:
            return False
        del entry[1][subscriber]
        if not entry[1]:
            del self.patterns[pattern]
        return True

    def publish(self, channel: bytes, message: bytes) -> int:
        """Send to every subscriber of the channel and of each matching pattern; how many
        got it."""
        count = 0
        subs = self.channels.get(channel)
        if subs:
            body = b"3\r\n$7\r\nmessage\r\n" + _bulk(channel) + _bulk(message)
            for s in list(subs):
                s.push(s.push_kind + body)
            count += len(subs)
        if self.patterns:
            tail = None
            for pattern, (match, psubs) in list(self.patterns.items()):
                if match is None or match(channel):
                    if tail is None:
                        tail = _bulk(channel) + _bulk(message)
                    body = b"4\r\n$8\r\npmessage\r\n" + _bulk(pattern) + tail
                    for s in list(psubs):
                        s.push(s.push_kind + body)
                    count += len(psubs)
        self.messages += count
        return count
