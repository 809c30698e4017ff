"""twistd / twist plugins: titan-master, titan-worker."""
from twisted.application.service import ServiceMaker

titan_master = ServiceMaker(
    "titan-master", "titan.master.tap",
    "Titan master: schedules jobs, DAGs and services onto workers.", "titan-master")
titan_worker = ServiceMaker(
    "titan-worker", "titan.worker.tap",
    "Titan worker: dials the master and runs jobs in their own process groups.", "titan-worker")
