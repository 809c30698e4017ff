"""TITAN_PROTO opcodes.

The numbers below 0x30 and from 0x50 are the public reference's; the structured-only operations
Titan adds take numbers from 0x30 to 0x4F.  docs/protocol.md lists every one.
"""
from __future__ import annotations

import enum


class Op(enum.IntEnum):
    HEARTBEAT = 0x01
    REGISTER = 0x02  # worker hello
    SUBMIT_JOB = 0x03
    SUBMIT_DAG = 0x04
    STOP = 0x07
    STATS = 0x08
    STATS_JSON = 0x09
    JOB_COMPLETE = 0x12
    LOG_STREAM = 0x15
    GET_LOGS = 0x16
    LOG_BATCH = 0x17

    # Titan's structured operations.
    HELLO = 0x30  # client hello
    DISPATCH = 0x31  # master -> worker push: run this job
    KILL = 0x32  # master -> worker push: stop this job
    JOB_STARTED = 0x33  # worker -> master
    LIST_WORKERS = 0x34
    JOB_INFO = 0x35
    WAIT_JOB = 0x36
    LIST_JOBS = 0x37
    ADD_JOBS = 0x38  # a running job (or a client) grows a DAG run
    RUN_INFO = 0x39
    WAIT_RUN = 0x3A
    LIST_RUNS = 0x3B
    DECIDE_GATE = 0x3C  # approve or reject
    SET_RESULT = 0x3D
    GET_RESULT = 0x3E
    LIST_SCHEDULES = 0x3F
    REMOVE_SCHEDULE = 0x40
    SERVICE_STATUS = 0x41  # worker -> master push: a service's state changed
    RESTART_SERVICE = 0x42  # client -> master request; master -> worker push
    LIST_SERVICES = 0x43
    PUBLISH = 0x44  # through the master to the store
    SUBSCRIBE = 0x45  # then MESSAGE pushes on this connection
    MESSAGE = 0x46  # master -> client push
    UNSUBSCRIBE = 0x47
    WATCH_RUN = 0x48  # a snapshot of the run, then RUN_CHANGED pushes on this connection
    RUN_CHANGED = 0x49  # master -> client push: what changed in a watched run
    UNWATCH_RUN = 0x4A
    SUBMIT_JOBS = 0x4B  # many jobs in one request
    WAIT_JOBS = 0x4C  # until every job of a list has ended (a bounded long poll)
    START_WORKER = 0x4D  # the master starts a local titan-worker
    DRAIN_WORKER = 0x4E  # client -> master request; master -> worker push: leave when idle
    RELOAD_CONFIG = 0x4F  # the master reads its config file again (as SIGHUP does)

    ACK = 0x50
    ERROR = 0x51
    UPLOAD_ASSET = 0x53
    FETCH_ASSET = 0x54
    GET_JOB_STATUS = 0x55
    CANCEL_JOB = 0x56
    DEPLOY_SCRIPT = 0x57
    KV_SET = 0x60
    KV_GET = 0x61
    KV_SADD = 0x62
    KV_SMEMBERS = 0x63


KNOWN_OPCODES = frozenset(int(op) for op in Op)


def op_name(value: int) -> str:
    try:
        return Op(value).name
    except ValueError:
        return f"0x{value:02x}"
