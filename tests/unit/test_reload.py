"""Reloading the master's config (titan/master/reload.py): the plan, the checks before it,
and what a reload changes of a running master (driven through its protocol)."""
from __future__ import annotations

import signal

import attrs
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from titan.auth import job_token
from titan.config import Config, ConfigError, parse_config
from titan.core.routing import Capability, LeastLoaded
from titan.errors import RemoteError
from titan.master.reload import build, flatten, plan, reload_on_hangup, summary
from titan.protocols.opcodes import Op
from titan.web.auth import OPERATOR, VIEWER

from tests.unit.test_master import TOKEN, MasterCase, Peer


class PlanTests(SynchronousTestCase):
    def test_nothing_changed(self):
        p = plan(Config(), Config())
        self.assertFalse(p.changed)
        self.assertEqual(summary(p), "nothing changed")

    def test_live_keys_are_applied_the_others_wait_for_a_restart(self):
        old = Config()
        new = parse_config("router: [capability]\nmaster:\n  listen: tcp:9999\n"
                           "  keep_finished: 10\nautoscaler:\n  max_workers: 9\n"
                           "web:\n  viewer_tokens: [v1]\n  listen: tcp:1\n"
                           "persistence:\n  fsync: always\n", "t.yaml")
        p = plan(old, new)
        self.assertEqual(set(p.applied), {"router", "master.keep_finished",
                                          "autoscaler.max_workers", "web.viewer_tokens"})
        self.assertEqual(set(p.restart), {"master.listen", "web.listen", "persistence.fsync"})
        self.assertEqual(p.elsewhere, ())
        # What the master runs with: the applied keys' new values, the others' old ones.
        self.assertEqual(p.config.router, ("capability",))
        self.assertEqual(p.config.master.keep_finished, 10)
        self.assertEqual(p.config.autoscaler.max_workers, 9)
        self.assertEqual(p.config.master.listen, old.master.listen)
        self.assertEqual(p.config.web.listen, old.web.listen)
        self.assertEqual(p.config.persistence.fsync, old.persistence.fsync)
        self.assertEqual(p.config.source, "t.yaml")

    def test_keys_the_master_does_not_read(self):
        new = parse_config("worker:\n  slots: 9\n  detect_tags: false\n"
                           "mcp:\n  allow_gate_decisions: true\nlog_format: json\n")
        p = plan(Config(), new)
        self.assertEqual(set(p.elsewhere), {"worker.slots", "mcp.allow_gate_decisions"})
        # ...but the autoscaler reads detect_tags at its start, and twistd the log format.
        self.assertEqual(set(p.restart), {"worker.detect_tags", "log_format"})
        self.assertIn("needs a restart: ", summary(p))
        self.assertIn("not read by the master", summary(p))

    def test_flatten_names_every_key_once(self):
        keys = flatten(Config())
        self.assertIn("router", keys)
        self.assertIn("master.keep_finished", keys)
        self.assertIn("web.viewer_tokens", keys)
        self.assertNotIn("source", keys)
        self.assertNotIn("lines", keys)

    def test_build_refuses_an_unknown_plugin_naming_file_and_line(self):
        for text, where in [
                ("master:\n  keep_finished: 3\nrouter: [capability, nearest]\n",
                 "c.yaml:3: router: "),
                ("autoscaler:\n  name: eager\n", "c.yaml:2: autoscaler.name: "),
                ("\npersistence:\n  backend: tape\n", "c.yaml:3: persistence.backend: ")]:
            with self.assertRaises(ConfigError) as e:
                build(parse_config(text, "c.yaml"))
            self.assertTrue(str(e.exception).startswith(where), str(e.exception))

    def test_a_plugin_that_refuses_its_options_is_a_bad_config(self):
        from titan.master import reload

        class Picky:
            def build(self, options):
                raise ValueError("window must be under a minute")
        real = reload.find
        self.patch(reload, "find", lambda interface, name, kind: Picky()
                   if kind == "autoscaler" else real(interface, name, kind))
        with self.assertRaises(ConfigError) as e:
            build(parse_config("autoscaler:\n  name: reactive\n  window: 90\n", "c.yaml"))
        self.assertEqual(str(e.exception), "c.yaml:2: autoscaler.name: reactive could not be "
                                           "built: window must be under a minute")

    def test_build_makes_the_chain_and_the_autoscaler(self):
        built = build(parse_config("router: [least-loaded]\nautoscaler:\n  max_workers: 7\n"))
        self.assertEqual([type(r) for r in built.routers], [LeastLoaded])
        self.assertEqual(built.autoscaler.max_workers, 7)


class ReloadCase(MasterCase):
    """A master whose config file is `self.text` (its loader parses it, as the tap's reads
    the file: with the command line's listener and data dir over it)."""

    def setUp(self) -> None:
        super().setUp()
        self.text = ""
        self.master.config_loader = self.load
        self.logged: list = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def load(self) -> Config:
        config = parse_config(self.text, "/etc/titan.yaml")
        mc = self.master.config.master
        return config.override("", token=config.token or TOKEN).override(
            "master", listen=mc.listen, data_dir=mc.data_dir)

    def reload(self, text: str) -> dict:
        self.text = text
        c = self.client()
        code, body = c.reply(c.send(Op.RELOAD_CONFIG, {}))
        if code == Op.ERROR:
            raise RemoteError(body["code"], body["message"])
        return body["result"]

    def messages(self, level: str) -> list[str]:
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.logged if e["log_level"].name == level]


class ReloadTests(ReloadCase):
    def test_applies_live_settings_and_reports_the_rest(self):
        done = self.reload("router: [capability]\nmaster:\n  keep_finished: 7\n"
                           "  forget_after: 2\n  heartbeat_timeout: 9\n  log_max_bytes: 1000\n"
                           "  heartbeat_interval: 3\nautoscaler:\n  max_workers: 0\n"
                           "  window: 2\n")
        self.assertEqual(set(done["applied"]), {
            "router", "master.keep_finished", "master.forget_after", "master.heartbeat_timeout",
            "master.log_max_bytes", "autoscaler.max_workers", "autoscaler.window"})
        self.assertEqual(done["restart"], ["master.heartbeat_interval"])
        s = self.master.scheduler
        self.assertEqual([type(r) for r in s.routers], [Capability])
        self.assertEqual((s.keep_finished, s.forget_grace, s.heartbeat_timeout), (7, 2.0, 9.0))
        self.assertEqual(self.master.logs.max_bytes, 1000)
        self.assertEqual(self.master.autoscaler.autoscaler.window, 2.0)
        self.assertEqual(self.master.config.master.heartbeat_interval, 1.0)  # not applied
        self.assertIn("config reloaded from /etc/titan.yaml (titan reload by ", "\n".join(
            self.messages("info")))
        status = self.client().result(Op.STATS_JSON, {})["config"]
        self.assertEqual((status["reloads"], status["restart"]),
                         (1, ["master.heartbeat_interval"]))
        # The same file again: nothing more applied, the restart still waited for.
        again = self.reload(self.text)
        self.assertEqual((again["applied"], again["restart"]),
                         ([], ["master.heartbeat_interval"]))

    def test_the_new_chain_routes_the_next_dispatch(self):
        w = self.worker("w1", slots=2, tags=["GPU"])
        c = self.client()
        self.reload("router: [capability]\n")
        job = c.result(Op.SUBMIT_JOB, {"command": ["true"], "tags": ["GPU"]})["job_id"]
        self.assertEqual([d["job_id"] for d in self.dispatched(w)], [job])

    def test_a_bad_file_is_refused_and_the_config_in_use_stays(self):
        self.reload("master:\n  keep_finished: 7\n")
        before = self.master.config
        for text, said in [
                ("master:\n  keep_finished: [\n", "/etc/titan.yaml:3: not valid YAML"),
                ("master:\n  keep_finishd: 3\n", "/etc/titan.yaml:2: unknown key "
                                                 "master.keep_finishd"),
                ("master:\n  keep_finished: -1\n", "/etc/titan.yaml:2: master.keep_finished "
                                                   "must be more than 0"),
                ("router: [capability]\nautoscaler:\n  name: eager\n",
                 "/etc/titan.yaml:3: autoscaler.name: ")]:
            with self.assertRaises(RemoteError) as e:
                self.reload(text)
            self.assertEqual(e.exception.code, "bad_config")
            self.assertIn(said, e.exception.message)
            self.assertIn("the one in use stays", e.exception.message)
            self.assertIs(self.master.config, before)
            self.assertEqual(self.master.scheduler.keep_finished, 7)
            self.assertIn(said, self.messages("error")[-1])
        # Refused whole: the router of the last one was not applied either.
        self.assertEqual(len(self.master.scheduler.routers), 3)
        self.assertEqual(self.client().result(Op.STATS_JSON, {})["config"]["last"]["ok"], False)

    def test_connections_stay_and_running_jobs_keep_their_tokens(self):
        w = self.worker("w1")
        c = self.client()
        job = c.result(Op.SUBMIT_JOB, {"command": ["sleep", "9"]})["job_id"]
        [dispatch] = self.dispatched(w)
        w.send(Op.JOB_STARTED, {"job_id": job, "attempt": 1}, rid=False)
        done = self.reload("token: new-secret\nweb:\n  viewer_tokens: [look]\n")
        self.assertLessEqual({"token", "web.viewer_tokens"}, set(done["applied"]))
        self.assertNotIn("new-secret", repr(done) + "\n".join(self.messages("info")))
        # Open connections are kept: the worker's and the client's.
        self.assertFalse(w.transport.disconnecting or c.transport.disconnecting)
        self.assertEqual(c.result(Op.JOB_INFO, {"job_id": job})["state"], "RUNNING")
        # New hellos need the new token; the running attempt's token still opens one.
        refused = Peer(self.master)
        code, body = refused.reply(refused.send(Op.HELLO, {"token": TOKEN}))
        self.assertEqual((code, body["code"]), (Op.ERROR, "auth"))
        Peer(self.master).result(Op.HELLO, {"token": "new-secret"})
        as_job = Peer(self.master)
        self.assertEqual(as_job.result(Op.HELLO, {"token": dispatch["token"]})["job_id"], job)
        # ...but a token made with the old one for an attempt not running then opens nothing.
        forged = Peer(self.master)
        code, body = forged.reply(forged.send(Op.HELLO, {"token": job_token(TOKEN, job, 2)}))
        self.assertEqual((code, body["code"]), (Op.ERROR, "auth"))
        # The job ends as usual, once.
        w.result(Op.JOB_COMPLETE, {"job_id": job, "attempt": 1, "exit_code": 0})
        self.assertEqual(c.result(Op.JOB_INFO, {"job_id": job})["state"], "COMPLETED")
        # A new attempt's token is made with the new one.
        second = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        [dispatch] = self.dispatched(w)
        self.assertEqual(dispatch["token"], job_token("new-secret", second, 1))

    def test_web_sessions_of_a_token_that_is_gone_end(self):
        self.reload("web:\n  viewer_tokens: [look, peek]\n")
        auth = self.master.web.auth
        self.assertEqual(auth.role_of("peek"), VIEWER)
        viewer = auth.open_session(VIEWER)
        operator = auth.open_session(OPERATOR)
        self.reload("web:\n  viewer_tokens: [look]\n  session_ttl: 60\n")
        self.assertIsNone(auth.role_of("peek"))
        self.assertIsNone(auth.session(viewer.sid))
        self.assertIsNotNone(auth.session(operator.sid))
        self.assertEqual(auth.session_ttl, 60)
        self.reload("token: rotated\nweb:\n  viewer_tokens: [look]\n  session_ttl: 60\n")
        self.assertIsNone(auth.session(operator.sid))
        self.assertEqual(auth.role_of("rotated"), OPERATOR)
        self.assertIsNone(auth.role_of(TOKEN))

    def test_a_job_token_may_not_reload(self):
        w = self.worker("w1")
        c = self.client()
        job = c.result(Op.SUBMIT_JOB, {"command": ["sleep", "9"]})["job_id"]
        [dispatch] = self.dispatched(w)
        w.send(Op.JOB_STARTED, {"job_id": job, "attempt": 1}, rid=False)
        as_job = Peer(self.master)
        as_job.result(Op.HELLO, {"token": dispatch["token"]})
        code, body = as_job.reply(as_job.send(Op.RELOAD_CONFIG, {}))
        self.assertEqual((code, body["code"]), (Op.ERROR, "forbidden"))

    def test_without_a_loader_it_says_so(self):
        self.master.config_loader = None
        with self.assertRaises(RemoteError) as e:
            self.reload("")
        self.assertIn("not started with options", e.exception.message)


class HangupTests(ReloadCase):
    def test_sighup_reloads_in_the_reactors_loop(self):
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        handed: list = []

        class Reactor:
            def callFromThread(self, f, *args):
                handed.append((f, args))

        reload_on_hangup(self.master, Reactor())
        self.text = "master:\n  keep_finished: 5\n"
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        self.assertEqual(self.master.scheduler.keep_finished, 10_000)  # not in the handler
        [(f, args)] = handed
        f(*args)
        self.assertEqual(self.master.scheduler.keep_finished, 5)
        self.assertIn("(SIGHUP)", self.messages("info")[-1])
        # A bad file: logged, nothing raised out of the reactor's call.
        self.text = "master: [\n"
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        handed[-1][0]()
        self.assertIn("config reload (SIGHUP) refused, the config in use stays: "
                      "/etc/titan.yaml:", self.messages("error")[-1])
        self.assertEqual(self.master.scheduler.keep_finished, 5)


class OptionsTests(SynchronousTestCase):
    """The tap's loader: the file again, under the same command line."""

    def test_reread_keeps_the_command_line_and_the_token_source(self):
        from titan.master.tap import Options
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("master:\n  keep_finished: 4\n")
        token_file = self.mktemp()
        with open(token_file, "w") as f:
            f.write("first\n")
        options = Options()
        options.parseOptions(["--config", path, "--listen", "tcp:0", "--token-file",
                              token_file, "--data-dir", self.mktemp()])
        self.assertEqual((options.config.token, options.config.master.keep_finished),
                         ("first", 4))
        with open(path, "w") as f:
            f.write("master:\n  keep_finished: 6\n  listen: tcp:7\n")
        with open(token_file, "w") as f:
            f.write("second\n")
        again = options.reload()
        self.assertEqual((again.token, again.master.keep_finished, again.master.listen),
                         ("second", 6, "tcp:0"))
        self.assertEqual(again.master.data_dir, options.config.master.data_dir)
        with open(path, "w") as f:
            f.write("master:\n  keep_finishd: 6\n")
        with self.assertRaises(ConfigError) as e:
            options.reload()
        self.assertIn(f"{path}:2: unknown key master.keep_finishd", str(e.exception))

    def test_flatten_and_plan_ignore_the_lines(self):
        a = parse_config("master:\n  keep_finished: 4\n", "a.yaml")
        b = parse_config("\n\nmaster:\n  keep_finished: 4\n", "a.yaml")
        self.assertEqual(a, b)
        self.assertFalse(plan(a, b).changed)
        self.assertEqual(attrs.evolve(a, token="x").lines, a.lines)
