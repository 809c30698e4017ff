"""The HTTP face as a service of the master's tree: its own listener (web.listen), the port
it bound in <data_dir>/web.port, and a one-time login code in <data_dir>/web.login (mode
0600: whoever may read the token file may read it) for the link `titan up` prints."""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.web.server import Site

from titan.datadir import write_file
from titan.listener import ListenerService
from titan.master.api import Caller, MasterApi, RemoteError
from titan.web.app import WebApp
from titan.web.auth import OPERATOR, VIEWER, WebAuth
from titan.web.events import ChangeHub, EventsResource, LogStreamResource
from titan.web.static import Root

PORT_FILE = "web.port"
LOGIN_FILE = "web.login"


class WebFace(MultiService):
    log = Logger()

    def __init__(self, api: MasterApi, data_dir: str, reactor: Any = None) -> None:
        super().__init__()
        # The change hub of the live events (titan/web/events.py), built at the first
        # subscription.
        self.hub: Optional[ChangeHub] = None
        self.log_streams: set = set()  # the job log streams open now
        wc = api.config.web
        self.api = api
        self.data_dir = data_dir
        self.auth = WebAuth(self._is_cluster_token, wc.viewer_tokens, api.now, wc.session_ttl,
                            saved_in=data_dir, key_of=self._session_key)
        self.web = WebApp(api, self.auth, wc.max_body_bytes, self._events)
        self.site = Site(Root(self.web.resource()), reactor=reactor or api.reactor)
        self.site.displayTracebacks = False
        self.reactor = reactor or api.reactor
        self.listener = ListenerService(self.reactor, wc.listen, self.site,
                                        self._listening, who="titan-master (web.listen)")
        self.listener.setServiceParent(self)

    def reconfigure(self, wc, token_changed: bool) -> dict:
        """A config reload's `web:` settings that apply live (titan/master/reload.py); the
        listener's are for a restart.  Sessions opened with a token the reload took away
        end: every operator session when the cluster token changed, every viewer session
        when a viewer token was removed.  Says how many sessions ended, by role."""
        removed = set(self.auth.viewer_tokens) - set(wc.viewer_tokens)
        self.auth.viewer_tokens = tuple(wc.viewer_tokens)
        self.auth.session_ttl = wc.session_ttl
        self.web.max_body_bytes = wc.max_body_bytes
        if self.hub is not None:
            self.hub.interval = wc.events_window
        ended = {}
        if token_changed:
            ended[OPERATOR] = self.auth.end_sessions(OPERATOR)
        if removed:
            ended[VIEWER] = self.auth.end_sessions(VIEWER)
        return ended

    def _events(self, job_ref: Optional[str] = None):
        """The SSE resource of the live changes (titan/web/events.py), or of one job's log
        with `job_ref`."""
        if job_ref is not None:
            return LogStreamResource(self.api, self._caller_of, job_ref,
                                     streams=self.log_streams)
        if self.hub is None:  # it follows the master only while someone subscribes
            wc = self.api.config.web
            self.hub = ChangeHub(self.api, self.reactor, interval=wc.events_window,
                                 ring_size=wc.events_ring)
        return EventsResource(self.hub, self._caller_of,
                              buffer_limit=self.api.config.web.events_max_unread_bytes)

    def sse_clients(self) -> dict[str, int]:
        """The Server-Sent Events streams open now: of the changes, of job logs."""
        return {"events": self.hub.subscribers if self.hub is not None else 0,
                "log": len(self.log_streams)}

    def _caller_of(self, request) -> Optional[Caller]:
        """The events' auth: the caller of a request's credentials, or None (401)."""
        who = self.auth.principal(request)
        return Caller(None, who.describe) if who is not None else None

    def _session_key(self, sid: str) -> str:
        secret = self.api.token_derived_key(b"titan web sessions")
        return hmac.new(secret, sid.encode(), hashlib.sha256).hexdigest()

    def _is_cluster_token(self, token: str) -> bool:
        try:
            self.api.check_cluster_token(token)
        except RemoteError:
            return False
        return True

    def _listening(self, port) -> None:
        address = port.getHost()
        # The code first: whoever sees web.port may expect web.login beside it.
        write_file(self.data_dir, LOGIN_FILE, self.auth.new_login_code() + "\n")
        write_file(self.data_dir, PORT_FILE, f"{getattr(address, 'port', address)}\n")
        self.log.info("titan-master web API on {address}", address=address)

    def stopService(self):
        if self.hub is not None:
            self.hub.stop()
        for name in (PORT_FILE, LOGIN_FILE):
            try:
                os.unlink(os.path.join(self.data_dir, name))
            except OSError:
                pass
        return super().stopService()
