"""The built-in autoscaler, found like any third party's: through titan.plugins."""
from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from titan.core.autoscale import Reactive
from titan.interfaces import IAutoscalerFactory


@implementer(IPlugin, IAutoscalerFactory)
class _ReactiveFactory:
    name = Reactive.name
    description = Reactive.description

    def build(self, options):
        return Reactive(min_workers=options.get("min_workers", 0),
                        max_workers=options.get("max_workers", 4),
                        window=options.get("window", 5.0),
                        idle_timeout=options.get("idle_timeout", 45.0))


reactive = _ReactiveFactory()
