"""The dashboard's files (webui/, built by `make webui` into titan/web/static/) and the root
of the web listener: /api/v1/..., /login and /metrics go to the routes (titan/web/app.py),
/assets/... are the built files, and every other path is the single-page app's index.html,
whose router draws the view of that path (/runs/RUN_ID after a reload, say)."""
from __future__ import annotations

import os

from twisted.web.resource import Resource
from twisted.web.static import File

# TITAN_WEB_STATIC: another build to serve (`vite build --outDir DIR` while working on webui/).
STATIC_DIR = os.environ.get("TITAN_WEB_STATIC") or \
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# The UI's own code only: no inline script, no other origin, not framed by another site.
# (Styles may be inline: the graph library positions nodes with style attributes.)
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       b"form-action 'self'")
NOT_BUILT = b"""<!doctype html><meta charset="utf-8"><title>Titan</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Titan</h1><p>The dashboard's files are not built in this installation
(<code>titan/web/static/</code> is missing). In a checkout, <code>make webui</code> builds
them (it needs Node.js: Debian's <code>nodejs</code>), and <code>make run</code> does it
for you.</p><p>The API is served all the same: <a href="/api/v1/openapi.json">
/api/v1/openapi.json</a>.</p></body>"""


def _secure(request) -> None:
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"same-origin")


class Assets(File):
    """The built, content-hashed files: a browser may keep them for good."""

    def render_GET(self, request):
        _secure(request)
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        return super().render_GET(request)

    def directoryListing(self):
        return self.forbidden

    def createSimilarFile(self, path):
        f = super().createSimilarFile(path)
        f.__class__ = Assets
        return f


class AppPage(Resource):
    """index.html for any path of the app (never cached: it names the current assets)."""
    isLeaf = True

    def __init__(self, static_dir: str) -> None:
        super().__init__()
        self.index = os.path.join(static_dir, "index.html")

    def render_GET(self, request):
        _secure(request)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        try:
            with open(self.index, "rb") as f:
                return f.read()
        except OSError:
            return NOT_BUILT

    def render_HEAD(self, request):
        return self.render_GET(request)


class Root(Resource):
    """The web listener's root: routes for /api, /login and /metrics, files for /assets,
    else the app."""

    def __init__(self, routes: Resource, static_dir: str = STATIC_DIR) -> None:
        super().__init__()
        self.routes = routes
        self.page = AppPage(static_dir)
        self.assets = Assets(os.path.join(static_dir, "assets"))

    def getChildWithDefault(self, name: bytes, request):
        if name in (b"api", b"login", b"metrics"):
            # The routes read the whole path themselves (titan/web/app.py's RawPath).
            request.postpath.insert(0, request.prepath.pop())
            return self.routes
        if name == b"assets" and request.postpath:
            return self.assets
        return self.page

    def render(self, request):
        return self.page.render(request)
