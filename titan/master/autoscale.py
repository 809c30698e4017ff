"""The autoscaler's shell: looks every `interval`, starts and retires local workers.

Workers it starts are children of the master (twistd titan-worker processes); it reaps them,
and they die with it (SIGTERM when the master goes, however it goes).  They carry only the
tags this machine offers: the ones it is seen to have (detected at start as a worker
detects them) and `autoscaler.tags`; jobs that need more wait for a worker that has it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Callable, Optional, Protocol

import attrs
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan.core import events as ev
from titan.core.autoscale import (
    Pending, RetireWorker, ScaleView, SpawnWorker, Waiting, WorkerInfo, unservable)
from titan.core.model import JobState, WorkerState
from titan.datadir import holder
from titan.testing.processes import die_with_parent
from titan.worker.detect import detected_tags



class Master(Protocol):
    """What the autoscaler uses of the master service, which composes it (an import of
    titan/master/service.py here would be a cycle: tests/unit/test_layers.py)."""
    config: Any
    reactor: Any
    scheduler: Any
    listener: Any
    data_dir: str
    token: str

    def now(self) -> float: ...
    def handle(self, event: object) -> Any: ...


@attrs.define(eq=False)
class Child:
    name: str
    tags: frozenset
    proc: subprocess.Popen
    started: float
    reason: str
    registered: bool = False


class AutoscalerService(Service):
    log = Logger()

    def __init__(self, master: Master, autoscaler,
                 detect: Callable[[float], set] = detected_tags) -> None:
        self.master = master
        self.autoscaler = autoscaler
        self.children: dict[str, Child] = {}
        self._count = 0
        self._loop: Optional[LoopingCall] = None
        self.last_decisions: list[str] = []
        self._detect = detect
        self.detected: frozenset = frozenset()
        self.configured: frozenset = _upper(master.config.autoscaler.tags)
        self._told: set = set()  # (what, needs) it said it cannot serve: said once a spell

    @property
    def enabled(self) -> bool:
        return self.master.config.autoscaler.max_workers > 0

    @property
    def spawnable(self) -> frozenset:
        """What a worker started here may offer: this machine's tags and the configured."""
        return self.detected | self.configured

    def startService(self) -> None:
        super().startService()
        if self.enabled:
            wc = self.master.config.worker
            if wc.detect_tags:
                self.detected = _upper(self._detect(wc.high_mem_gb))
            self.log.info("autoscaler: workers it starts may carry {tags} (detected: "
                          "{detected}; autoscaler.tags: {configured})",
                          tags=_label(self.spawnable), detected=_label(self.detected),
                          configured=_label(self.configured))
            self._loop = LoopingCall(self.evaluate)
            self._loop.clock = self.master.reactor
            self._loop.start(self.master.config.autoscaler.interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.proc.wait(10)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()

    # -- the view --------------------------------------------------------------------------

    def view(self, now: float) -> ScaleView:
        s = self.master.scheduler
        waiting: dict[frozenset, list] = {}
        for (tags, strict), queue in s._queues.items():
            if strict is not None:
                continue  # they wait for one worker by name: a new one cannot help them
            for _, _, job in queue:
                if job.queued and job.state is JobState.PENDING:
                    waiting.setdefault(tags, []).append(
                        now - (now if job.queued_at is None else job.queued_at))
        by_name = {w.name: w for w in s.workers.values()}
        for name, child in self.children.items():
            child.registered = child.registered or name in by_name
        workers = tuple(
            WorkerInfo(worker_id=w.worker_id, name=w.name, tags=w.tags, slots=w.slots,
                       busy=len(w.running),
                       idle_for=None if w.running or w.idle_since is None
                       else now - w.idle_since,
                       spawned=w.name in self.children, state=w.state.value)
            for w in s.workers.values())
        pending = tuple(Pending(c.name, c.tags, now - c.started)
                        for c in self.children.values()
                        if not c.registered and c.proc.poll() is None)
        return ScaleView(
            waiting=tuple(Waiting(tags, len(ages), max(ages)) for tags, ages in waiting.items()),
            workers=workers, pending=pending, spawnable=self.spawnable)

    # -- the loop --------------------------------------------------------------------------

    def evaluate(self) -> None:
        self._reap()
        now = self.master.now()
        view = self.view(now)
        self._tell_unservable(view)
        for decision in self.autoscaler.evaluate(view, now):
            if isinstance(decision, SpawnWorker):
                if not decision.tags <= self.spawnable:  # a plugin that did not check
                    self._tell_once("refused", decision.tags,
                                    f"refused to start a worker tagged "
                                    f"{_label(decision.tags)}: {self.cannot(decision.tags)}")
                    continue
                self.spawn(decision.tags, decision.reason)
            elif isinstance(decision, RetireWorker):
                self.retire(decision.worker_id, decision.name, decision.reason)

    def cannot(self, tags: frozenset) -> Optional[str]:
        """Why no worker started here could take jobs needing `tags` (None: one could)."""
        missing = tags - self.spawnable
        if not missing:
            return None
        return (f"this machine offers {_label(self.spawnable)}, not {_label(missing)} "
                f"(detected: {_label(self.detected)}; autoscaler.tags: "
                f"{_label(self.configured)})")

    def annotate(self, view: dict) -> dict:
        """A job's view, its `waiting` told why the autoscaler will not help, when the job
        waits for tags no live worker has and no worker started here could have."""
        tags = _upper(view.get("tags") or ())
        if not (self.enabled and view.get("state") == "PENDING" and view.get("waiting")
                and tags):
            return view
        live = [w for w in self.master.scheduler.workers.values()
                if w.state is WorkerState.ALIVE]
        why = self.cannot(tags)
        if why and not any(tags <= w.tags for w in live):
            view["waiting"] = f"{view['waiting']}; the autoscaler will not start one: {why}"
        return view

    def _tell_unservable(self, view: ScaleView) -> None:
        waiting = {w.tags for w in view.waiting}
        # A need that cleared is told again if it comes back.
        self._told = {told for told in self._told if told[1] in waiting}
        for tags, _missing in unservable(view):
            self._tell_once("none for", tags, f"no worker started for jobs needing "
                                              f"{_label(tags)}: {self.cannot(tags)}")

    def _tell_once(self, kind: str, tags: frozenset, text: str) -> None:
        if (kind, tags) not in self._told:
            self._told.add((kind, tags))
            self._note(text)

    def _reap(self) -> None:
        for name, child in list(self.children.items()):
            code = child.proc.poll()
            if code is not None:
                del self.children[name]
                self.log.info("autoscaled worker {name} exited with status {code}",
                              name=name, code=code)
                for w in list(self.master.scheduler.workers.values()):
                    if w.name == name:  # gone for good: its jobs (if any) run elsewhere
                        self.master.handle(ev.WorkerLost(w.worker_id, f"{name} exited"))

    def spawn(self, tags: frozenset, reason: str) -> None:
        port = self.master.listener.port.getHost().port
        while True:
            self._count += 1
            name = f"auto-{self._count}"
            data_dir = os.path.join(self.master.data_dir, "autoscaled", name)
            # One a previous master started may still be stopping there (it holds the dir).
            if name not in self.children and holder(data_dir) is None:
                break
        os.makedirs(data_dir, exist_ok=True)
        # Exactly the tags decided (a subset of what this machine offers): the master
        # detected them already, with its config's thresholds.
        cmd = [os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=",
               f"--logfile={os.path.join(data_dir, 'worker.log')}", "titan-worker",
               "--master", f"127.0.0.1:{port}", "--name", name, "--no-detect-tags",
               "--slots", str(self.master.config.autoscaler.slots), "--data-dir", data_dir]
        if tags:
            cmd += ["--tags", ",".join(sorted(tags))]
        env = dict(os.environ, TITAN_TOKEN=self.master.token)
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=die_with_parent, cwd=data_dir)
        self.children[name] = Child(name, frozenset(tags), proc, self.master.now(), reason)
        self._note(f"started worker {name} (pid {proc.pid}): {reason}")

    def retire(self, worker_id: str, name: str, reason: str) -> None:
        child = self.children.get(name)
        if child is None:
            return
        # No new jobs for it from now on, then a clean stop.
        self.master.handle(ev.WorkerRetiring(worker_id, f"retired by the autoscaler: {reason}"))
        child.proc.send_signal(signal.SIGTERM)
        self._note(f"retired worker {name}: {reason}")

    def _note(self, text: str) -> None:
        self.log.info("autoscaler: {text}", text=text)
        self.last_decisions = (self.last_decisions + [text])[-20:]

    def describe(self, name: str) -> Optional[dict]:
        child = self.children.get(name)
        if child is None:
            return None
        return {"spawned_by": "autoscaler", "pid": child.proc.pid, "why": child.reason}


def _upper(tags) -> frozenset:
    return frozenset(t.strip().upper() for t in tags if t.strip())


def _label(tags: frozenset) -> str:
    return ",".join(sorted(tags)) or "no tags"
