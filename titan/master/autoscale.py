"""The autoscaler's shell: looks every `interval`, starts and retires local workers.

Workers it starts are children of the master (twistd titan-worker processes); it reaps them,
and they die with it (SIGTERM when the master goes, however it goes).  They carry only the
tags this machine offers: the ones it is seen to have (detected at start as a worker
detects them) and `autoscaler.tags`; jobs that need more wait for a worker that has it.

An operator may start one by hand too (`start`: the dashboard, `titan workers start`), with
the tags and slots they name -- they ask for them, so no check against this machine -- up to
MAX_STARTED of them at a time; the autoscaler never retires those.  A drained worker
(DRAINING) is told to leave once it runs nothing: one started here gets SIGTERM, any other a
DRAIN_WORKER frame (it stops by itself).
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
from titan.protocols.opcodes import Op
from titan.testing.processes import die_with_parent
from titan.worker.detect import detected_tags

# Workers started by hand (not by the autoscaler) alive at once, and the slots each may
# have: a bound on what a click or a script loop can fork on this machine.
MAX_STARTED = 8
MAX_SLOTS = 64


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
    def to_worker(self, worker_id: str, opcode: int, body: dict) -> bool: ...
    def worker_link(self, worker_id: str) -> Any: ...


@attrs.define(eq=False)
class Child:
    name: str
    tags: frozenset
    proc: subprocess.Popen
    started: float
    reason: str
    registered: bool = False
    slots: int = 0
    by: str = "autoscaler"  # or who started it by hand: "dashboard", "cli"
    leaving: bool = False  # drained: told to stop


class AutoscalerService(Service):
    log = Logger()
    max_started = MAX_STARTED
    max_slots = MAX_SLOTS

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
        # Drained workers (not ours) sent DRAIN_WORKER: worker id -> the connection it went
        # on (one that reconnects before it got it is told again).
        self._sent_leave: dict = {}

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
        # Also with the autoscaler off: it reaps workers started by hand and ends drains.
        self._loop = LoopingCall(self.evaluate)
        self._loop.clock = self.master.reactor
        self._loop.start(self.master.config.autoscaler.interval, now=False)

    def reconfigure(self, autoscaler) -> None:
        """A config reload's autoscaler (titan/master/reload.py), built from the master's
        new `autoscaler:` section: its bounds, tags and interval apply from the next look.
        The workers it started stay, and are retired as before once idle."""
        ac = self.master.config.autoscaler
        self.autoscaler = autoscaler
        self.configured = _upper(ac.tags)
        wc = self.master.config.worker
        if self.enabled and wc.detect_tags and not self.detected:
            self.detected = _upper(self._detect(wc.high_mem_gb))
        if self._loop is not None and self._loop.running and self._loop.interval != ac.interval:
            self._loop.stop()
            self._loop.start(ac.interval, now=False)

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
                       spawned=w.name in self.children
                       and self.children[w.name].by == "autoscaler", state=w.state.value)
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
        self.finish_drains()
        if not self.enabled:
            return
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
                self.log.info("autoscaled worker {worker} exited with status {code}",
                              worker=name, code=code)
                for w in list(self.master.scheduler.workers.values()):
                    if w.name == name:  # gone for good: its jobs (if any) run elsewhere
                        self.master.handle(ev.WorkerLost(w.worker_id, f"{name} exited"))

    def _data_dir(self, name: str, by: str) -> str:
        return os.path.join(self.master.data_dir,
                            "autoscaled" if by == "autoscaler" else "started", name)

    def name_taken(self, name: str, by: str = "dashboard") -> Optional[str]:
        """Why a worker started here may not be called `name` (None: it may)."""
        if name in self.children:
            return f"worker {name} was already started here"
        if any(w.name == name for w in self.master.scheduler.workers.values()):
            return f"a worker named {name} is connected"
        # One a previous master started may still be stopping there (it holds the dir).
        if holder(self._data_dir(name, by)) is not None:
            return f"a worker named {name} is still stopping"
        return None

    def started_by_hand(self) -> int:
        return sum(1 for c in self.children.values()
                   if c.by != "autoscaler" and c.proc.poll() is None)

    def spawn(self, tags: frozenset, reason: str, slots: Optional[int] = None,
              name: Optional[str] = None, by: str = "autoscaler") -> Child:
        """Start a local titan-worker with exactly `tags` (the autoscaler's are a subset of
        what this machine offers, detected already with its config's thresholds; an
        operator's are what they asked for)."""
        port = self.master.listener.port.getHost().port
        prefix = "auto" if by == "autoscaler" else "local"
        while name is None:
            self._count += 1
            candidate = f"{prefix}-{self._count}"
            if self.name_taken(candidate, by) is None:
                name = candidate
        slots = slots or self.master.config.autoscaler.slots
        data_dir = self._data_dir(name, by)
        os.makedirs(data_dir, exist_ok=True)
        cmd = [*twistd_command(), "-n", "--pidfile=",
               f"--logfile={os.path.join(data_dir, 'worker.log')}", "titan-worker",
               "--master", f"127.0.0.1:{port}", "--name", name, "--no-detect-tags",
               "--slots", str(slots), "--data-dir", data_dir]
        if tags:
            cmd += ["--tags", ",".join(sorted(tags))]
        env = dict(os.environ, TITAN_TOKEN=self.master.token)
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=die_with_parent, cwd=data_dir)
        child = Child(name, frozenset(tags), proc, self.master.now(), reason, slots=slots,
                      by=by)
        self.children[name] = child
        self._note(f"started worker {name} (pid {proc.pid}): {reason}")
        return child

    def finish_drains(self) -> None:
        """Drained workers that run nothing any more leave: ours get SIGTERM (a clean stop),
        others are told to stop by themselves."""
        draining = set()
        for w in list(self.master.scheduler.workers.values()):
            if w.state is not WorkerState.DRAINING:
                continue
            draining.add(w.worker_id)
            if w.running:
                continue
            child = self.children.get(w.name)
            if child is not None and child.proc.poll() is None:
                if not child.leaving:
                    child.leaving = True
                    child.proc.send_signal(signal.SIGTERM)
                    self._note(f"drained worker {w.name} runs nothing: stopping it")
                continue
            link = self.master.worker_link(w.worker_id)
            if link is not None and self._sent_leave.get(w.worker_id) is not link and \
                    self.master.to_worker(w.worker_id, Op.DRAIN_WORKER,
                                          {"worker_id": w.worker_id}):
                self._sent_leave[w.worker_id] = link
                self._note(f"drained worker {w.name} runs nothing: told it to stop")
        for worker_id in set(self._sent_leave) - draining:
            del self._sent_leave[worker_id]

    def retire(self, worker_id: str, name: str, reason: str) -> None:
        child = self.children.get(name)
        if child is None:
            return
        # No new jobs for it from now on, then a clean stop.
        self.master.handle(ev.WorkerRetiring(worker_id, f"retired by the autoscaler: {reason}"))
        child.leaving = True
        child.proc.send_signal(signal.SIGTERM)
        self._note(f"retired worker {name}: {reason}")

    def _note(self, text: str) -> None:
        self.log.info("autoscaler: {text}", text=text)
        self.last_decisions = (self.last_decisions + [text])[-20:]

    def describe(self, name: str) -> Optional[dict]:
        child = self.children.get(name)
        if child is None:
            return None
        return {"spawned_by": child.by, "pid": child.proc.pid, "why": child.reason}


def _upper(tags) -> frozenset:
    return frozenset(t.strip().upper() for t in tags if t.strip())


def _label(tags: frozenset) -> str:
    return ",".join(sorted(tags)) or "no tags"


def twistd_command() -> list:
    """How this process runs twistd: through its own bundle (`python3 X.pyz twistd`) when
    the master runs from one (titan package), else the twistd beside this Python."""
    from titan import bundle
    if bundle.PATH:
        return [sys.executable, bundle.PATH, "twistd"]
    return [os.path.join(os.path.dirname(sys.executable), "twistd")]
