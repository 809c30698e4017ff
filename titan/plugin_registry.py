"""Finding plugins by kind and name (Twisted's plugin system over titan.plugins)."""
from __future__ import annotations

from typing import Any

from titan.errors import TitanError


class UnknownPlugin(TitanError):
    pass


def plugins(interface) -> list:
    from twisted.plugin import getPlugins

    import titan.plugins
    found = {}
    for plugin in getPlugins(interface, titan.plugins):
        found.setdefault(plugin.name, plugin)
    return [found[name] for name in sorted(found)]


def find(interface, name: str, what: str) -> Any:
    available = plugins(interface)
    for plugin in available:
        if plugin.name == name:
            return plugin
    known = ", ".join(p.name for p in available) or "none"
    raise UnknownPlugin(f"unknown {what} {name!r} (known: {known})")
