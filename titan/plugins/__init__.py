"""Titan's plugin package: Twisted's plugin system looks here for Titan's plugins.

Third parties ship modules in `titan/plugins/` of their own distributions (without an
`__init__.py`): the line below makes every such directory on sys.path part of this package.
"""
from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821 (set by the import system)
__all__: list = []
