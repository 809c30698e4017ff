"""Persistence backends for the master's event log (see titan.interfaces.IPersistence)."""
