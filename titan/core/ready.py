"""A queue of ready jobs, best first.

Entries are `(order, push, job)` tuples (see Scheduler._enqueue): the smallest comes first.
Most entries arrive in order -- jobs of one priority, submitted one after another -- so the
queue keeps those in a FIFO run and only the others in a heap: pushing and popping an
in-order entry costs O(1), not O(log n), and the first entry is the smaller of two heads.
Pure code.
"""
from __future__ import annotations

import heapq
from collections import deque
from itertools import chain
from typing import Iterator, Optional


class ReadyQueue:
    __slots__ = ("heap", "run")

    def __init__(self) -> None:
        self.heap: list[tuple] = []  # entries that came out of order
        self.run: deque = deque()  # entries in order: each one >= the one before

    def push(self, entry: tuple) -> None:
        run = self.run
        if not run or entry > run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def first(self) -> Optional[tuple]:
        """The smallest entry (left in place), or None when empty."""
        heap, run = self.heap, self.run
        if heap and (not run or heap[0] < run[0]):
            return heap[0]
        return run[0] if run else None

    def pop(self) -> tuple:
        """Take the smallest entry out (IndexError when empty)."""
        heap, run = self.heap, self.run
        if heap and (not run or heap[0] < run[0]):
            return heapq.heappop(heap)
        return run.popleft()

    def __len__(self) -> int:
        return len(self.heap) + len(self.run)

    def __bool__(self) -> bool:
        return bool(self.heap or self.run)

    def __iter__(self) -> Iterator[tuple]:
        """Every entry, in no particular order."""
        return chain(self.heap, self.run)
