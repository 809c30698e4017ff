"""Who asks over HTTP: the cluster token (a Bearer header, or a browser session that a login
with it opened), a read-only viewer token, or nobody.

A browser session is a random id in an HttpOnly, SameSite=Strict cookie, mapped here to its
role, its expiry and a CSRF value that every change made with the cookie must repeat in the
X-Titan-CSRF header: a page of another site can make the browser send the cookie (not with
SameSite=Strict, but older browsers), never read the value to set the header.
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
from typing import Callable, Optional

import attrs

from titan.auth import token_matches
from titan.datadir import write_file

COOKIE = b"titan_session"
CSRF_HEADER = b"x-titan-csrf"
OPERATOR, VIEWER = "operator", "viewer"
LOGIN_CODE_TTL = 3600.0  # a one-time login link works for an hour, once


@attrs.define
class Session:
    sid: str
    role: str
    csrf: str
    expires: float


@attrs.frozen
class Principal:
    """An authenticated HTTP caller: its role, how it showed it (`bearer` or a session),
    and what to record of it (a decision names it)."""
    role: str
    session: Optional[Session]
    describe: str

    @property
    def may_change(self) -> bool:
        return self.role == OPERATOR


class WebAuth:
    """Sessions and one-time login codes.  With `saved_in` (a data dir) the sessions are also
    kept in its `web.sessions` (0600), so a master restart does not log browsers out: each
    under a key derived from its id and the cluster token (`key_of`), never the id itself,
    so the file opens no session by itself and a new token ends them all."""

    def __init__(self, is_cluster_token: Callable[[str], bool], viewer_tokens: tuple[str, ...],
                 clock: Callable[[], float], session_ttl: float,
                 saved_in: Optional[str] = None,
                 key_of: Optional[Callable[[str], str]] = None) -> None:
        # Asked per request (MasterApi.check_cluster_token): the master may load its token
        # after this is built.
        self._is_cluster_token = is_cluster_token
        self.viewer_tokens = tuple(viewer_tokens)
        self.clock = clock
        self.session_ttl = session_ttl
        self.sessions: dict[str, Session] = {}
        self.codes: dict[str, float] = {}  # one-time login code -> expiry
        self.saved_in = saved_in if key_of is not None else None
        self.key_of = key_of
        # Saved sessions not yet seen since the start: key -> (role, csrf, expires, ids).
        self._saved: dict[str, dict] = self._load()

    def role_of(self, token: object) -> Optional[str]:
        """The role a token gives, compared in constant time; None for any other."""
        if not isinstance(token, str) or not token:
            return None
        if self._is_cluster_token(token):
            return OPERATOR
        # Every viewer token is compared (no early exit that would time which one matched).
        matched = False
        for viewer in self.viewer_tokens:
            matched |= token_matches(viewer, token)
        return VIEWER if matched else None

    def open_session(self, role: str) -> Session:
        self._sweep()
        session = Session(secrets.token_urlsafe(32), role, secrets.token_urlsafe(24),
                          self.clock() + self.session_ttl)
        self.sessions[session.sid] = session
        self._save()
        return session

    def session(self, sid: Optional[str]) -> Optional[Session]:
        if not sid:
            return None
        session = self.sessions.get(sid)
        if session is None:
            session = self._restore(sid)
            if session is None:
                return None
        if session.expires <= self.clock():
            del self.sessions[sid]
            return None
        return session

    def close_session(self, sid: str) -> None:
        if self.sessions.pop(sid, None) is not None or self._restore(sid) is not None:
            self.sessions.pop(sid, None)
            self._save()

    def end_sessions(self, role: str) -> int:
        """End every session of `role` (saved ones too): a config reload took away the
        token they were opened with (titan/web/face.py).  How many live ones ended."""
        ended = [sid for sid, s in self.sessions.items() if s.role == role]
        for sid in ended:
            del self.sessions[sid]
        self._saved = {k: v for k, v in self._saved.items() if v["role"] != role}
        self._save()
        return len(ended)

    # -- sessions that outlive a restart ---------------------------------------------------

    FILE = "web.sessions"

    def _load(self) -> dict[str, dict]:
        if self.saved_in is None:
            return {}
        try:
            with open(os.path.join(self.saved_in, self.FILE)) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: browsers log in again
        now = self.clock()
        return {k: v for k, v in saved.items() if isinstance(v, dict)
                and isinstance(v.get("expires"), (int, float)) and v["expires"] > now
                and v.get("role") in (OPERATOR, VIEWER) and isinstance(v.get("csrf"), str)}

    def _restore(self, sid: str) -> Optional[Session]:
        """A session saved before the restart, on its first use since."""
        if not self._saved:
            return None
        entry = self._saved.pop(self.key_of(sid), None)
        if entry is None:
            return None
        session = Session(sid, entry["role"], entry["csrf"], float(entry["expires"]))
        self.sessions[sid] = session
        return session

    def _save(self) -> None:
        if self.saved_in is None:
            return
        now = self.clock()
        kept = {k: v for k, v in self._saved.items() if v["expires"] > now}
        for s in self.sessions.values():
            if s.expires > now:
                kept[self.key_of(s.sid)] = {"role": s.role, "csrf": s.csrf,
                                            "expires": s.expires}
        try:
            write_file(self.saved_in, self.FILE, json.dumps(kept))
        except OSError:
            pass  # a full disk costs a re-login after a restart, nothing more

    def new_login_code(self, ttl: float = LOGIN_CODE_TTL) -> str:
        """A code that opens one operator session, once (the link `titan up` prints): never
        the token itself in a URL, which browsers keep in their history."""
        code = secrets.token_urlsafe(24)
        self.codes[code] = self.clock() + ttl
        return code

    def use_login_code(self, code: object) -> bool:
        if not isinstance(code, str):
            return False
        expires = self.codes.pop(code, None)  # single use: gone whether it was late or not
        return expires is not None and expires > self.clock()

    def principal(self, request) -> Optional[Principal]:
        """Who sent `request` (a twisted.web Request): a Bearer token, else a live session's
        cookie; None if neither.  A Bearer header that is wrong is refused, even with a good
        cookie beside it (what was meant is unclear)."""
        peer = getattr(request.getClientAddress(), "host", "?")
        header = request.getHeader(b"authorization")
        if header is not None:
            scheme, _, token = header.partition(b" ")
            role = self.role_of(token.strip().decode("utf-8", "replace")) \
                if scheme.lower() == b"bearer" else None
            return Principal(role, None, f"{role} token over HTTP from {peer}") if role \
                else None
        sid = request.getCookie(COOKIE)
        session = self.session(sid.decode("ascii", "replace") if sid else None)
        if session is None:
            return None
        return Principal(session.role, session, f"{session.role} session over HTTP from {peer}")

    def csrf_ok(self, session: Session, given: Optional[bytes]) -> bool:
        return given is not None and hmac.compare_digest(session.csrf.encode(), given)

    def _sweep(self) -> None:
        now = self.clock()
        for sid in [sid for sid, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[sid]
        for code in [c for c, t in self.codes.items() if t <= now]:
            del self.codes[code]
