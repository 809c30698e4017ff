"""The autoscaler's shell: looks every `interval`, starts and retires local workers.

Workers it starts are children of the master (twistd titan-worker processes); it reaps them,
and they die with it (SIGTERM when the master goes, however it goes).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Optional

import attrs
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan.core import events as ev
from titan.core.autoscale import (
    Pending, RetireWorker, ScaleView, SpawnWorker, Waiting, WorkerInfo)
from titan.core.model import JobState
from titan.testing.processes import die_with_parent

if TYPE_CHECKING:
    from titan.master.service import MasterService


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

    def __init__(self, master: "MasterService", autoscaler) -> None:
        self.master = master
        self.autoscaler = autoscaler
        self.children: dict[str, Child] = {}
        self._count = 0
        self._loop: Optional[LoopingCall] = None
        self.last_decisions: list[str] = []

    def startService(self) -> None:
        super().startService()
        if self.master.config.autoscaler.max_workers > 0:
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
        for (tags, _strict), queue in s._queues.items():
            for _, _, job in queue:
                if job.queued and job.state is JobState.PENDING:
                    waiting.setdefault(tags, []).append(now - (job.queued_at or now))
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
            workers=workers, pending=pending)

    # -- the loop --------------------------------------------------------------------------

    def evaluate(self) -> None:
        self._reap()
        now = self.master.now()
        for decision in self.autoscaler.evaluate(self.view(now), now):
            if isinstance(decision, SpawnWorker):
                self.spawn(decision.tags, decision.reason)
            elif isinstance(decision, RetireWorker):
                self.retire(decision.worker_id, decision.name, decision.reason)

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
        self._count += 1
        name = f"auto-{self._count}"
        data_dir = os.path.join(self.master.data_dir, "autoscaled", name)
        os.makedirs(data_dir, exist_ok=True)
        cmd = [os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=",
               f"--logfile={os.path.join(data_dir, 'worker.log')}", "titan-worker",
               "--master", f"127.0.0.1:{port}", "--name", name,
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
