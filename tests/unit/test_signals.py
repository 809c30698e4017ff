"""Stop signals are handed to the reactor's loop, not handled inside the signal handler."""
from __future__ import annotations

import signal

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from titan.tap import stop_signals_in_the_loop


class FakeReactor:
    def __init__(self) -> None:
        self.triggers: list = []
        self.calls: list = []
        self.stopped: list = []

    def addSystemEventTrigger(self, phase, event, f, *args):
        self.triggers.append((phase, event, f))

    def callFromThread(self, f, *args):
        self.calls.append((f, args))

    def sigTerm(self, number, frame=None):
        self.stopped.append(("term", number))

    def sigInt(self, number, frame=None):
        self.stopped.append(("int", number))


class StopSignalTests(SynchronousTestCase):
    def setUp(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, lambda *a: None)  # stands for the reactor's own handler
        self.logged: list = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_handlers_only_hand_the_signal_to_the_loop(self):
        reactor = FakeReactor()
        stop_signals_in_the_loop(reactor)
        [(phase, event, install)] = reactor.triggers
        self.assertEqual((phase, event), ("after", "startup"))  # after the reactor's own
        install()
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        self.assertEqual(len(reactor.calls), 2)
        self.assertEqual(self.logged, [])  # nothing logged (no lock taken) in the handler
        self.assertEqual(reactor.stopped, [])
        for f, args in reactor.calls:  # the loop runs them
            f(*args)
        # The first stops the reactor; a second would only make it complain.
        self.assertEqual(reactor.stopped, [("term", signal.SIGTERM)])

    def test_default_dispositions_are_left_alone(self):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        reactor = FakeReactor()
        stop_signals_in_the_loop(reactor)
        reactor.triggers[0][2]()
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)
