"""The ready queue: entries come out smallest first, however they went in."""
from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from titan.core.ready import ReadyQueue


class ReadyQueueTests(SynchronousTestCase):
    def test_in_order_entries_stay_out_of_the_heap(self):
        q = ReadyQueue()
        for n in range(100):
            q.push((n, n, f"j{n}"))
        self.assertEqual((len(q.run), len(q.heap)), (100, 0))
        self.assertEqual([q.pop()[0] for _ in range(100)], list(range(100)))
        self.assertFalse(q)
        self.assertIsNone(q.first())
        self.assertRaises(IndexError, q.pop)

    def test_out_of_order_entries_come_out_in_order(self):
        q = ReadyQueue()
        for order in (10, 20, 5, 30, 1, 25, 40):  # 5, 1 and 25 go to the heap
            q.push((order, order, "x"))
        self.assertEqual(len(q.heap), 3)
        self.assertEqual(q.first()[0], 1)
        self.assertEqual(len(q), 7)
        self.assertEqual(sorted(e[0] for e in q), [1, 5, 10, 20, 25, 30, 40])
        self.assertEqual([q.pop()[0] for _ in range(7)], [1, 5, 10, 20, 25, 30, 40])

    def test_any_mix_of_pushes_and_pops_is_a_priority_queue(self):
        rng = random.Random(7)
        for _ in range(200):
            q, model, push = ReadyQueue(), [], 0
            for _ in range(rng.randrange(1, 80)):
                if model and rng.random() < 0.4:
                    model.sort()
                    self.assertEqual(q.first(), model[0])
                    self.assertEqual(q.pop(), model.pop(0))
                else:
                    push += 1
                    # Mostly rising orders (submissions), sometimes an old one (a retry).
                    order = push * 10 if rng.random() < 0.7 else rng.randrange(push * 10 + 1)
                    entry = (order, push, None)
                    q.push(entry)
                    model.append(entry)
                self.assertEqual(len(q), len(model))
            self.assertEqual([q.pop() for _ in range(len(q))], sorted(model))
