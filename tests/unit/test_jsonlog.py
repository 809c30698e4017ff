"""JSON log lines (titan/jsonlog.py): what a line holds, and how twistd and twist get them."""
from __future__ import annotations

import io
import json
import os

from twisted.application.twist._options import TwistOptions
from twisted.logger import Logger, LogLevel, jsonFileLogObserver
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from titan import jsonlog
from titan.protocols.opcodes import Op

from tests.unit.test_master import MasterCase


def emitted(emit) -> dict:
    """The one event `emit(logger)` logs."""
    events: list = []
    emit(Logger(namespace="titan.test", observer=events.append))
    [event] = events
    return event


class LineTests(SynchronousTestCase):
    def test_fields_are_top_level_keys(self):
        event = emitted(lambda log: log.info(
            "job {job_id} ended {state}", job_id="r1/a", run_id="r1", attempt=2,
            worker="w1", state="COMPLETED"))
        line = jsonlog.event_as_line(event)
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertNotIn("\x1e", line)
        d = json.loads(line)
        self.assertEqual({k: d[k] for k in ("level", "namespace", "message", "job_id",
                                            "run_id", "attempt", "worker", "state")},
                         {"level": "info", "namespace": "titan.test",
                          "message": "job r1/a ended COMPLETED", "job_id": "r1/a",
                          "run_id": "r1", "attempt": 2, "worker": "w1", "state": "COMPLETED"})
        self.assertRegex(d["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertFalse([k for k in d if k.startswith("log_")])

    def test_a_field_named_like_a_base_key_keeps_both(self):
        d = jsonlog.event_as_dict(emitted(lambda log: log.warn(
            "{message} at {time}", message="disk full", time=3, namespace="disks")))
        self.assertEqual((d["message"], d["message_"], d["time_"], d["level"],
                          d["namespace"], d["namespace_"]),
                         ("disk full at 3", "disk full", 3, "warn", "titan.test", "disks"))

    def test_values_json_cannot_say_are_text_and_newlines_stay_escaped(self):
        line = jsonlog.event_as_line(emitted(lambda log: log.error(
            "peer {peer}", peer=object(), text="two\nlines")))
        self.assertEqual(line.count("\n"), 1)
        d = json.loads(line)
        self.assertTrue(d["peer"].startswith("<object object"))
        self.assertEqual((d["level"], d["text"]), ("error", "two\nlines"))

    def test_a_failure_adds_its_error_and_traceback(self):
        def emit(log):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("dividing {what}", what="by zero")
        d = json.loads(jsonlog.event_as_line(emitted(emit)))
        self.assertEqual((d["level"], d["message"], d["what"]),
                         ("critical", "dividing by zero", "by zero"))
        self.assertIn("division by zero", d["error"])
        self.assertIn("ZeroDivisionError", d["traceback"])

    def test_twisteds_own_json_has_separators_ours_has_not(self):
        event = emitted(lambda log: log.info("x {job_id}", job_id="j"))
        theirs, ours = io.StringIO(), io.StringIO()
        jsonFileLogObserver(theirs)(event)
        jsonlog.json_line_observer(ours)(event)
        self.assertTrue(theirs.getvalue().startswith("\x1e"))
        self.assertEqual(json.loads(ours.getvalue())["job_id"], "j")


class OptionsTests(SynchronousTestCase):
    """`log_format` and the command lines of twistd and twist."""

    def setUp(self) -> None:
        saved = dict(jsonlog._destination)
        self.addCleanup(jsonlog._destination.update, saved)

    def plugin_options(self, parent) -> usage.Options:
        options = usage.Options()
        options.parent = parent
        return options

    def test_twistd_logger_writes_lines_to_its_logfile(self):
        path = self.mktemp()
        parent = ServerOptions()
        parent["logfile"], parent["logger"] = path, jsonlog.FACTORY
        jsonlog.choose(self.plugin_options(parent), "text")
        observer = jsonlog.json_logger()
        observer(emitted(lambda log: log.info("a {job_id}", job_id="j1")))
        observer(emitted(lambda log: log.info("b {run_id}", run_id="r1")))
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([(d["message"], d.get("job_id"), d.get("run_id")) for d in lines],
                         [("a j1", "j1", None), ("b r1", None, "r1")])

    def test_twistd_without_a_logfile_in_the_foreground_writes_to_stdout(self):
        parent = ServerOptions()
        parent["nodaemon"] = True
        jsonlog.choose(self.plugin_options(parent), "json")
        out = io.StringIO()
        self.patch(jsonlog.sys, "stdout", out)
        jsonlog.json_logger()(emitted(lambda log: log.info("hello")))
        self.assertEqual(json.loads(out.getvalue())["message"], "hello")

    def test_the_config_names_the_logger_to_twistd(self):
        parent = ServerOptions()
        jsonlog.choose(self.plugin_options(parent), "json")
        self.assertEqual(parent["logger"], jsonlog.FACTORY)
        parent.postOptions()  # twistd's own: imports it
        self.assertIs(parent["logger"], jsonlog.json_logger)

    def test_a_logger_on_the_command_line_wins(self):
        parent = ServerOptions()
        parent["logger"] = "twisted.logger.textFileLogObserver"
        jsonlog.choose(self.plugin_options(parent), "json")
        self.assertEqual(parent["logger"], "twisted.logger.textFileLogObserver")
        parent = ServerOptions()
        jsonlog.choose(self.plugin_options(parent), "text")
        self.assertIsNone(parent["logger"])

    def test_twist_json_gives_our_lines(self):
        for argv, config, ours in [(["--log-format", "json"], "text", True),
                                   ([], "json", True),
                                   (["--log-format", "text"], "json", False),
                                   ([], "text", False)]:
            parent = TwistOptions()
            for flag in argv[1:]:
                parent.opt_log_format(flag)
            jsonlog.choose(self.plugin_options(parent), config)
            parent.selectDefaultLogObserver()
            self.assertEqual(parent["fileLogObserverFactory"] is jsonlog.json_line_observer,
                             ours, (argv, config))

    def test_through_twistds_parser_with_a_titan_plugin(self):
        config, logfile = self.mktemp(), self.mktemp()
        with open(config, "w") as f:
            f.write("log_format: json\n")
        token = self.mktemp()
        with open(token, "w") as f:
            f.write("t0ken\n")
        self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                   if k != "TITAN_TOKEN"})
        options = ServerOptions()
        options.parseOptions(["-n", "--logfile", logfile, "--pidfile", "", "titan-worker",
                              "--config", config, "--token-file", token,
                              "--data-dir", self.mktemp()])
        self.assertIs(options["logger"], jsonlog.json_logger)
        jsonlog.json_logger()(emitted(lambda log: log.info("w {worker}", worker="w9")))
        with open(logfile) as f:
            self.assertEqual(json.loads(f.read())["worker"], "w9")


class LegacyTests(SynchronousTestCase):
    def test_twisted_python_log_events(self):
        from twisted.python import log
        events: list = []
        observer = events.append
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        log.msg("old style", system="sys", job_id="j")
        d = jsonlog.event_as_dict(events[-1])
        self.assertEqual((d["message"], d["level"], d["job_id"]), ("old style", "info", "j"))
        self.assertNotIn("isError", d)
        self.assertNotIn("message_", d)


class LevelTests(SynchronousTestCase):
    def test_every_level_by_name(self):
        for level in LogLevel.iterconstants():
            d = jsonlog.event_as_dict(emitted(lambda log: log.emit(level, "x")))
            self.assertEqual(d["level"], level.name)


class JobLinesTests(MasterCase):
    """What the master logs of a job: its failures always, every dispatch and completion
    with `log_jobs: true`."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def about(self, job_id: str) -> list:
        return [jsonlog.event_as_dict(e) for e in self.events if e.get("job_id") == job_id]

    def run_one(self, exit_code: int) -> str:
        w, c = self.worker("w1"), self.client()
        job = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        w.result(Op.JOB_COMPLETE, {"job_id": job, "attempt": 1, "exit_code": exit_code})
        self.reactor.advance(0)
        return job

    def test_by_default_failures_only(self):
        done = self.run_one(0)
        self.assertEqual(self.about(done), [])
        failed = self.run_one(3)
        [line] = self.about(failed)
        self.assertEqual({k: line[k] for k in ("level", "message", "attempt", "worker",
                                               "exit_code", "state")},
                         {"level": "warn", "message": f"job {failed} ended FAILED",
                          "attempt": 1, "worker": "w1", "exit_code": 3, "state": "FAILED"})

    def test_log_jobs_says_every_dispatch_and_end(self):
        import attrs
        self.master.config = attrs.evolve(self.master.config, log_jobs=True)
        done = self.run_one(0)
        self.assertEqual([(d["message"], d["worker"], d["attempt"]) for d in self.about(done)],
                         [(f"job {done} attempt 1 dispatched to w1", "w1", 1),
                          (f"job {done} ended COMPLETED", "w1", 1)])
