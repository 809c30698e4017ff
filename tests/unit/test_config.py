"""The YAML config loader: every key, and errors that name the file, the line and the key."""
from __future__ import annotations

import attrs

import os

from twisted.trial import unittest

from titan.config import Config, ConfigError, MasterConfig, WorkerConfig, load_config, parse_config

FULL = """\
token: s3cret
master:
  listen: tcp:7000
  data_dir: /srv/master
  heartbeat_interval: 1.5
  heartbeat_timeout: 7
  max_frame_bytes: 1048576
  retry_backoff_base: 0.5
  retry_backoff_cap: 30
worker:
  master: example.org:7000
  name: w1
  tags: [GPU, HIGH_MEM]
  slots: 8
  data_dir: /srv/worker
  log_batch_interval: 0.1
  kill_grace: 2
"""


class ParseTests(unittest.TestCase):
    def assertConfigError(self, text: str, message: str) -> None:
        e = self.assertRaises(ConfigError, parse_config, text, "/etc/t.yaml")
        self.assertEqual(str(e), message)

    def test_defaults(self):
        for text in ("", "# nothing\n", "master:\nworker: null\n"):
            config = parse_config(text, "t.yaml")
            self.assertEqual(config, Config(source="t.yaml"))
        config = Config()
        self.assertIsNone(config.token)
        self.assertEqual(config.master.listen, "tcp:9090:interface=127.0.0.1")
        self.assertEqual(config.master.max_frame_bytes, 16 * 1024 * 1024)
        self.assertEqual(config.worker.master, "127.0.0.1:9090")
        self.assertEqual((config.worker.tags, config.worker.slots), ((), 4))

    def test_every_key(self):
        config = parse_config(FULL, "full.yaml")
        self.assertEqual(config, Config(
            token="s3cret", source="full.yaml",
            master=MasterConfig(listen="tcp:7000", data_dir="/srv/master",
                                heartbeat_interval=1.5, heartbeat_timeout=7.0,
                                max_frame_bytes=1048576, retry_backoff_base=0.5,
                                retry_backoff_cap=30.0),
            worker=WorkerConfig(master="example.org:7000", name="w1", tags=("GPU", "HIGH_MEM"),
                                slots=8, data_dir="/srv/worker", log_batch_interval=0.1,
                                kill_grace=2.0)))
        self.assertIsInstance(config.master.heartbeat_timeout, float)

    def test_tags(self):
        for text, tags in [("[GPU, HIGH_MEM]", ("GPU", "HIGH_MEM")),
                           ('"GPU, HIGH_MEM"', ("GPU", "HIGH_MEM")),
                           ("GPU,,HIGH_MEM ,", ("GPU", "HIGH_MEM")),
                           ("\n    - gpu\n    - 42", ("gpu", "42")),
                           ("[yes, 1.10]", ("yes", "1.10")),  # as written, not True / 1.1
                           ('""', ()), ("[]", ())]:
            self.assertEqual(parse_config(f"worker:\n  tags: {text}\n").worker.tags, tags, text)

    def test_strings_are_taken_as_written(self):
        config = parse_config("token: 0123\nworker:\n  name: yes\n")
        self.assertEqual((config.token, config.worker.name), ("0123", "yes"))
        self.assertEqual(parse_config('token: "null"\n').token, "null")
        self.assertIsNone(parse_config("token: ~\n").token)

    def test_text_frames(self):
        # Issue 15, 1: off unless turned on; `loopback` (the old default) is refused, saying
        # what it became.
        self.assertEqual(parse_config("").master.text_frames, "off")
        self.assertEqual(parse_config("master:\n  text_frames: on\n").master.text_frames, "on")
        self.assertConfigError(
            "master:\n  text_frames: loopback\n",
            "/etc/t.yaml:2: master.text_frames: loopback is gone: text frames are off unless "
            "`on`, which serves them to processes of the master's own user on this machine "
            "only (docs/compat.md)")
        self.assertConfigError("master:\n  text_frames: yes\n",
                               "/etc/t.yaml:2: master.text_frames must be one of off, on, "
                               "not 'yes'")
        self.assertEqual(parse_config("master:\n  text_frame_ops: [KV_GET, STATS]\n")
                         .master.text_frame_ops, ("KV_GET", "STATS"))
        self.assertConfigError(
            "master:\n  text_frame_ops: [KV_GET, DECIDE_GATE]\n",
            "/etc/t.yaml:2: master.text_frame_ops must be among SUBMIT_JOB, SUBMIT_DAG, STOP, "
            "STATS, STATS_JSON, GET_LOGS, UPLOAD_ASSET, FETCH_ASSET, GET_JOB_STATUS, CANCEL_JOB, "
            "DEPLOY_SCRIPT, KV_SET, KV_GET, KV_SADD, KV_SMEMBERS, not 'DECIDE_GATE'")

    def test_unknown_key(self):
        self.assertConfigError(
            "master:\n  listen: tcp:0\n  heartbeat_timout: 3\n",
            "/etc/t.yaml:3: unknown key master.heartbeat_timout (known in master: listen, "
            "data_dir, heartbeat_interval, heartbeat_timeout, max_frame_bytes, "
            "retry_backoff_base, retry_backoff_cap, max_jobs_per_run, keep_finished, forget_after, "
            + ", ".join(f.name for f in attrs.fields(MasterConfig)[10:]) + ")")
        self.assertConfigError("\n\nworkers:\n  slots: 2\n",
                               "/etc/t.yaml:3: unknown key 'workers' (known: autoscaler, "
                               "llm, log_format, log_jobs, master, mcp, persistence, router, "
                               "store, token, web, worker)")

    def test_wrong_types(self):
        for text, message in [
            ("worker:\n  slots: many\n", "/etc/t.yaml:2: worker.slots must be a whole number, "
                                         "not 'many'"),
            ("worker:\n  slots: 2.5\n", "/etc/t.yaml:2: worker.slots must be a whole number, "
                                        "not 2.5"),
            ("worker:\n  slots: true\n", "/etc/t.yaml:2: worker.slots must be a whole number, "
                                         "not True"),
            ("master:\n\n  heartbeat_interval: fast\n",
             "/etc/t.yaml:3: master.heartbeat_interval must be a number, not 'fast'"),
            ("token: [a, b]\n", "/etc/t.yaml:1: token must be a string, not ['a', 'b']"),
            ("worker:\n  master: {host: x}\n",
             "/etc/t.yaml:2: worker.master must be a string, not {'host': 'x'}"),
            ("worker:\n  tags:\n    - [a]\n",
             "/etc/t.yaml:3: worker.tags must be a list of strings, not [['a']]"),
            ("worker:\n  tags: 5\n", "/etc/t.yaml:2: worker.tags must be a list of strings, not 5"),
            ("worker:\n  master:\n", "/etc/t.yaml:2: worker.master must not be empty"),
            ("master: 5\n", "/etc/t.yaml:1: master: expected a mapping of keys"),
        ]:
            self.assertConfigError(text, message)

    def test_numbers_out_of_range(self):
        self.assertConfigError("worker:\n  slots: 0\n",
                               "/etc/t.yaml:2: worker.slots must be more than 0, not 0")
        self.assertConfigError("master:\n  heartbeat_interval: -1\n",
                               "/etc/t.yaml:2: master.heartbeat_interval must be more than 0, "
                               "not -1.0")
        self.assertConfigError("worker:\n  kill_grace: -1\n",
                               "/etc/t.yaml:2: worker.kill_grace must be 0 or more, not -1.0")
        self.assertEqual(parse_config("worker:\n  kill_grace: 0\n").worker.kill_grace, 0.0)

    def test_duplicate_key(self):
        self.assertConfigError("master:\n  listen: tcp:1\n  listen: tcp:2\n",
                               "/etc/t.yaml:3: master.listen is given twice")
        self.assertConfigError("token: a\nmaster: {}\ntoken: b\n",
                               "/etc/t.yaml:3: token is given twice")

    def test_invalid_yaml(self):
        e = self.assertRaises(ConfigError, parse_config, "master:\n  listen: [tcp\n", "/etc/t.yaml")
        self.assertTrue(str(e).startswith("/etc/t.yaml:3: not valid YAML: "), str(e))
        e = self.assertRaises(ConfigError, parse_config, "a: b\n c: d\n", "/etc/t.yaml")
        self.assertTrue(str(e).startswith("/etc/t.yaml:2: not valid YAML: "), str(e))

    def test_unknown_yaml_tag(self):
        self.assertConfigError("\ntoken: !secret abc\n", "/etc/t.yaml:2: token: could not "
                               "determine a constructor for the tag '!secret'")

    def test_root_must_be_a_mapping(self):
        self.assertConfigError("- master\n- worker\n", "/etc/t.yaml:1: the config must be a mapping")
        self.assertConfigError("# a comment\nhello\n",
                               "/etc/t.yaml:2: the config must be a mapping")


class OverrideTests(unittest.TestCase):
    def test_override_replaces_only_given_values(self):
        config = parse_config(FULL)
        changed = config.override("worker", master=None, slots=2, tags=("A",), name=None)
        self.assertEqual(changed.worker, WorkerConfig(
            master="example.org:7000", name="w1", tags=("A",), slots=2, data_dir="/srv/worker",
            log_batch_interval=0.1, kill_grace=2.0))
        self.assertEqual(changed.master, config.master)
        self.assertEqual(config.worker.slots, 8)  # frozen: the original is untouched

    def test_override_top_level(self):
        config = parse_config(FULL)
        self.assertEqual(config.override("", token=None), config)
        self.assertEqual(config.override("", token="new").token, "new")


class LoadTests(unittest.TestCase):
    def test_load_file(self):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(FULL)
        config = load_config(path)
        self.assertEqual((config.source, config.worker.slots, config.token), (path, 8, "s3cret"))

    def test_errors_name_the_file(self):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("worker:\n  slots: 4\n  slot: 5\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertTrue(str(e).startswith(f"{path}:3: unknown key worker.slot "), str(e))

    def test_missing_file(self):
        path = os.path.join(self.mktemp(), "titan.yaml")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(e), f"{path}: cannot read the config file: No such file or directory")

    def test_not_utf8(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"token: \xff\xfe\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertTrue(str(e).startswith(f"{path}: cannot read the config file: not UTF-8"))

    def test_no_path_means_defaults(self):
        self.assertEqual(load_config(None), Config())


class WebConfigTests(unittest.TestCase):
    def test_web_section(self):
        config = parse_config("web:\n  enabled: false\n  listen: tcp:0\n"
                              "  viewer_tokens: [a, b]\n  max_body_bytes: 10\n")
        self.assertEqual((config.web.enabled, config.web.listen, config.web.viewer_tokens,
                          config.web.max_body_bytes), (False, "tcp:0", ("a", "b"), 10))
        self.assertEqual(parse_config("").web.listen, "tcp:8080:interface=127.0.0.1")

    def test_events_settings(self):
        web = parse_config("").web
        self.assertEqual((web.events_window, web.events_ring, web.events_max_unread_bytes),
                         (0.1, 10_000, 1 << 20))
        web = parse_config("web:\n  events_window: 0.25\n  events_ring: 500\n"
                           "  events_max_unread_bytes: 65536\n").web
        self.assertEqual((web.events_window, web.events_ring, web.events_max_unread_bytes),
                         (0.25, 500, 65536))

    def test_events_settings_out_of_range_say_what_and_where(self):
        for text, message in [
            ("web:\n  events_window: 0\n",
             "/etc/t.yaml:2: web.events_window must be more than 0, not 0.0"),
            ("web:\n  events_window: 0.001\n",
             "/etc/t.yaml:2: web.events_window must be between 0.01 and 10, not 0.001"),
            ("web:\n  enabled: true\n  events_window: 30\n",
             "/etc/t.yaml:3: web.events_window must be between 0.01 and 10, not 30.0"),
            ("web:\n  events_ring: 0\n",
             "/etc/t.yaml:2: web.events_ring must be more than 0, not 0"),
            ("web:\n  events_ring: 1.5\n",
             "/etc/t.yaml:2: web.events_ring must be a whole number, not 1.5"),
            ("web:\n  events_max_unread_bytes: 1000\n",
             "/etc/t.yaml:2: web.events_max_unread_bytes must be between 65536 and "
             "1073741824, not 1000"),
            ("web:\n  events_max_unread_bytes: 1MiB\n",
             "/etc/t.yaml:2: web.events_max_unread_bytes must be a whole number, not '1MiB'"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_config(text, "/etc/t.yaml")
            self.assertEqual(str(caught.exception), message)

    def test_events_settings_reach_the_hub(self):
        from twisted.internet.testing import MemoryReactorClock
        from titan.config import Config, MasterConfig, WebConfig
        from titan.master.service import MasterService
        try:
            import titan.web.events  # noqa: F401
        except ImportError:
            self.skipTest("titan/web/events.py is not there")
        config = Config(token="t", master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp()),
            web=WebConfig(listen="tcp:0:interface=127.0.0.1", events_window=0.5,
                          events_ring=7, events_max_unread_bytes=70_000))
        master = MasterService(config, reactor=MemoryReactorClock())
        master.privilegedStartService()
        master.startService()
        self.addCleanup(master.stopService)
        resource = master.web._events()
        self.assertEqual((master.web.hub.interval, master.web.hub._ring.maxlen,
                          resource.buffer_limit), (0.5, 7, 70_000))

    def test_http_option_overrides_web_listen(self):
        from titan.master.tap import Options
        options = Options()
        options.parseOptions(["--http", "tcp:0:interface=127.0.0.1", "--data-dir",
                              self.mktemp()])
        self.assertEqual(options.config.web.listen, "tcp:0:interface=127.0.0.1")
