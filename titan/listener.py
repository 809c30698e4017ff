"""A service that listens on a Twisted endpoint string (the master's and the store's)."""
from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString


class ListenerService(Service):
    """Listens on an endpoint string; the bound port is known once it has started."""

    def __init__(self, reactor, description: str, factory, on_listening=None,
                 who: str = "titan") -> None:
        self.who = who
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.on_listening = on_listening
        self.port = None

    def privilegedStartService(self) -> None:
        # twistd calls this before dropping privileges; `twist` calls only startService.
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        try:
            endpoint = serverFromString(self.reactor, self.description)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{self.who}: {self.description!r} is not a server endpoint string "
                             f"(like tcp:9090:interface=127.0.0.1): {e}")
        d = endpoint.listen(self.factory)
        failures: list = []
        d.addCallbacks(self._listening, failures.append)
        if failures:  # TCP and UNIX endpoints answer at once: fail start-up with the reason
            raise SystemExit(f"{self.who}: cannot listen on {self.description}: "
                             f"{failures[0].getErrorMessage()}")

    def _listening(self, port) -> None:
        self.port = port
        if self.on_listening:
            self.on_listening(port)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
