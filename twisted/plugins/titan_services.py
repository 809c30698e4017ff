"""twistd / twist plugins: titan-master, titan-worker, titan-store."""
from twisted.application.service import ServiceMaker

titan_master = ServiceMaker(
    "titan-master", "titan.master.tap",
    "Titan master: schedules jobs, DAGs and services onto workers.", "titan-master")
titan_worker = ServiceMaker(
    "titan-worker", "titan.worker.tap",
    "Titan worker: dials the master and runs jobs in their own process groups.", "titan-worker")
titan_store = ServiceMaker(
    "titan-store", "titan.store.tap",
    "TitanStore: keys, sets, hashes, lists, TTLs and pub/sub over the Redis protocol.",
    "titan-store")
