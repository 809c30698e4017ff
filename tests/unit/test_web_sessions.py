"""Browser sessions outlive a master restart (titan/web/auth.py's web.sessions), keyed so
that the file alone opens nothing and a new cluster token ends them all."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from titan.web.auth import OPERATOR, VIEWER, WebAuth


class SavedSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.now = 1000.0
        self.token = "cluster-token"

    def auth(self) -> WebAuth:
        def key_of(sid: str) -> str:
            secret = hmac.new(self.token.encode(), b"purpose", hashlib.sha256).digest()
            return hmac.new(secret, sid.encode(), hashlib.sha256).hexdigest()
        return WebAuth(lambda t: t == self.token, ("viewer-token",), lambda: self.now, 600.0,
                       saved_in=self.dir, key_of=key_of)

    def test_a_restarted_master_knows_the_session_and_its_csrf(self):
        first = self.auth()
        s = first.open_session(OPERATOR)
        v = first.open_session(VIEWER)
        again = self.auth()  # the master restarted
        got = again.session(s.sid)
        self.assertEqual((got.role, got.csrf, got.expires), (OPERATOR, s.csrf, s.expires))
        self.assertEqual(again.session(v.sid).role, VIEWER)
        self.assertIsNone(again.session("made-up"))

    def test_the_file_holds_no_session_id_and_is_private(self):
        s = self.auth().open_session(OPERATOR)
        path = os.path.join(self.dir, "web.sessions")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        with open(path) as f:
            text = f.read()
        self.assertNotIn(s.sid, text)
        self.assertEqual(len(json.loads(text)), 1)

    def test_a_new_token_logout_or_expiry_ends_it(self):
        first = self.auth()
        kept, out, late = (first.open_session(OPERATOR) for _ in range(3))
        first.close_session(out.sid)
        self.now += 300
        again = self.auth()
        self.assertIsNone(again.session(out.sid))  # logged out before the restart
        self.assertIsNotNone(again.session(kept.sid))
        self.now += 301  # past the ttl
        self.assertIsNone(self.auth().session(late.sid))
        self.now -= 301
        self.token = "a-new-token"
        self.assertIsNone(self.auth().session(kept.sid))

    def test_a_logout_after_the_restart_is_saved_too(self):
        s = self.auth().open_session(OPERATOR)
        again = self.auth()
        again.close_session(s.sid)
        self.assertIsNone(self.auth().session(s.sid))

    def test_an_unreadable_file_means_logging_in_again(self):
        with open(os.path.join(self.dir, "web.sessions"), "w") as f:
            f.write("{not json")
        auth = self.auth()
        self.assertIsNone(auth.session("anything"))
        self.assertIsNotNone(auth.session(auth.open_session(OPERATOR).sid))
