"""Built-in routers, found like any third party's: through titan.plugins."""
from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from titan.core import routing
from titan.interfaces import IRouterFactory


@implementer(IPlugin, IRouterFactory)
class _RouterFactory:
    def __init__(self, cls) -> None:
        self.cls = cls
        self.name = cls.name
        self.description = cls.description

    def build(self, options):
        return self.cls()


capability = _RouterFactory(routing.Capability)
affinity = _RouterFactory(routing.Affinity)
least_loaded = _RouterFactory(routing.LeastLoaded)
