"""Helpers for starting real Titan processes: used by `titan up`, the tests and bench/."""
