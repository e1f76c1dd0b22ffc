"""Healthchecks: a child of the monitor runs the probe in the container on Docker's schedule and
records Status, FailingStreak and the last five results in the container's state."""

from __future__ import annotations

import os
import time

from ketch.clock import rfc3339
from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context

_NS = 1_000_000_000
_LOG_ENTRIES = 5  # Docker keeps the last five probe results
_OUTPUT_LIMIT = 4096  # and at most 4 KiB of each probe's output


class Check(Record):
    test: tuple[str, ...]  # ("CMD-SHELL", "cmd") or ("CMD", argv...)
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0

    @property
    def argv(self) -> list[str]:
        if self.test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", self.test[1]]
        return list(self.test[1:])


def check_of(record: ContainerRecord, image_config: dict[str, Any]) -> Check | None:
    """--health-* flags, else the image's HEALTHCHECK; None when there is none or it is disabled."""
    from ketch.engine.create import options_from_json

    options = options_from_json(record.host_config["Ketch"])
    if options.no_healthcheck:
        return None
    if options.health is not None:
        h = options.health
        check = Check(tuple(h.test), h.interval, h.timeout, h.retries, h.start_period)
    else:
        doc = image_config.get("Healthcheck") or {}
        test = tuple(doc.get("Test") or ())
        if not test:
            return None
        check = Check(test, _seconds(doc, "Interval", 30), _seconds(doc, "Timeout", 30),
                      int(doc.get("Retries") or 3), _seconds(doc, "StartPeriod", 0))  # fmt: skip
    return None if check.test[0] == "NONE" or len(check.test) < 2 else check


def _seconds(doc: dict[str, Any], key: str, default: float) -> float:
    value = doc.get(key)
    return value / _NS if value else default


def start(ctx: Context, record: ContainerRecord, check: Check) -> int:
    """Fork the checker; its pid (the monitor kills it when the container stops)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _loop(ctx, record, check)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def _loop(ctx: Context, record: ContainerRecord, check: Check) -> None:
    from ketch.runtime.lifecycle import become_subreaper

    become_subreaper()  # the probe is our grandchild (it joins the container's pid namespace)
    store = ctx.containers()
    started = time.monotonic()
    store.update_state(record.id, health={"Status": "starting", "FailingStreak": 0, "Log": []})
    while True:
        time.sleep(check.interval)
        entry = probe(ctx, record, check)
        in_grace = time.monotonic() - started < check.start_period
        with store.lock(record.id):
            _record(store, record.id, entry, check, in_grace)


def _record(store: Any, container_id: str, entry: dict[str, Any], check: Check, in_grace: bool) -> None:
    from ketch.record import replace

    state = store.raw_state(container_id)
    health = dict(state.health or {"Status": "starting", "FailingStreak": 0, "Log": []})
    health["Log"] = [*health.get("Log", []), entry][-_LOG_ENTRIES:]
    if entry["ExitCode"] == 0:
        health["Status"], health["FailingStreak"] = "healthy", 0
    elif not in_grace:
        health["FailingStreak"] = health.get("FailingStreak", 0) + 1
        if health["FailingStreak"] >= check.retries:
            health["Status"] = "unhealthy"
    store.save_state(container_id, replace(state, health=health))


def probe(ctx: Context, record: ContainerRecord, check: Check) -> dict[str, Any]:
    """Run the probe once in the container: Docker's log entry (Start, End, ExitCode, Output)."""
    from ketch.errors import KetchError

    start = rfc3339()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        code = _exec(ctx, record, check, write_end)
        output = _drain(read_end)
    except (KetchError, OSError) as exc:  # a probe that cannot even start counts as failed
        code, output = -1, f"{exc}"
    finally:
        os.close(read_end)
    return {"Start": start, "End": rfc3339(), "ExitCode": code, "Output": output}


def _exec(ctx: Context, record: ContainerRecord, check: Check, out: int) -> int:
    from ketch.engine.execute import ExecOptions, process_json
    from ketch.oci.runtime import Process
    from ketch.runtime import lifecycle
    from ketch.runtime.container import Runtime

    ctr = Runtime(ctx.runtime_root).load(record.id)
    rootfs = ctx.containers().path(record.id, "rootfs")
    proc = Process.from_json(
        process_json(ctr.record.config.get("process") or {}, ExecOptions(tuple(check.argv)), rootfs)
    )
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(out, 1)
        os.dup2(out, 2)
        pid = lifecycle.exec_process(ctr, proc, lifecycle.Stdio(), 0, [])
    finally:
        for target, fd in zip((1, 2), saved, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.close(out)
    return _wait(pid, check.timeout)


def _wait(pid: int, timeout: float) -> int:
    """The probe's exit code; a probe that outlives its timeout is killed and counts as failed (-1)."""
    import signal

    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)  # -1: the probe reaches us as an orphan
        except ChildProcessError:
            got, status = 0, 0
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1
        time.sleep(0.01)


def _drain(fd: int) -> str:
    chunks, size = [], 0
    while size < _OUTPUT_LIMIT:
        data = os.read(fd, _OUTPUT_LIMIT - size)
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks).decode("utf-8", "replace")
