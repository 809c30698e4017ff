"""Built-in persistence backends, found like any third party's: through titan.plugins."""
from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from titan.interfaces import IPersistenceFactory


@implementer(IPlugin, IPersistenceFactory)
class _AOFFactory:
    name = "aof"
    description = "Append-only file with checksummed records and snapshots (the default)."

    def build(self, data_dir, options):
        from titan.persistence.aof import AOFPersistence
        return AOFPersistence(data_dir, fsync=options.get("fsync", "everysec"),
                              reactor=options.get("reactor"))


@implementer(IPlugin, IPersistenceFactory)
class _SQLiteFactory:
    name = "sqlite"
    description = "SQLite in WAL mode, written from a thread of its own."

    def build(self, data_dir, options):
        from titan.persistence.sqlite import SQLitePersistence
        return SQLitePersistence(data_dir, fsync=options.get("fsync", "everysec"),
                                 reactor=options.get("reactor"))


aof = _AOFFactory()
sqlite = _SQLiteFactory()
