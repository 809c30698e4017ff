"""The master's HTTP face: the dashboard's JSON API under /api/v1 (docs/web.md).

Like the other faces it holds a `MasterApi` and never the service that composes it
(tests/unit/test_layers.py checks this package too).
"""
