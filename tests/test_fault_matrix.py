"""The fault-injection matrix of issue 11: every edge, counting accepted against delivered.

Each case sends unique ids, counts what was accepted, and reads what the sink
recorded durably (tests/fault_sinks.py: one file per delivered batch, renamed
into place before `send_batch` returns). "Accepted means delivered": every
accepted id must be recorded; a duplicate is allowed only where an export was
killed after recording (a bare `ActorExitRequest` mid-export), and no refused
id may ever be recorded. Each case runs on its own system, which must leave no
process behind after `shutdown()` (the pids `isolated_system` had to SIGKILL
are asserted empty per test).

Bases: multiprocTCPBase everywhere; multiprocQueueBase wherever
docs/shutdown.md claims a guarantee for it (stop drains, export_timeout kills,
dead exporters are noticed, `shutdown()` alone loses nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fault_sinks import (
    Custom,
    DrainingFaultSink,
    FaultSink,
    delivered,
    records,
    victims,
)
from sinks import RecordingSink, wait_for
from support import process_gone
from thespian.actors import ActorSystem

from pachka_actors import ActorTimeout, ConfigError, Overloaded, Pachka
from pachka_actors._base import Base
from pachka_actors.systems import RECORDS, SessionProbe, isolated_system, session_pids

TCP, QUEUE = "multiprocTCPBase", "multiprocQueueBase"
BASES = [TCP, QUEUE]


@contextlib.contextmanager
def checked_system(base: str) -> Iterator[ActorSystem]:
    """An isolated system; after `shutdown()` none of its processes may be left to kill."""
    with isolated_system(base) as asys:
        record = RECORDS[-1]
        yield asys
    assert record.killed == [], f"processes outlived shutdown(): {record.killed}"


@pytest.fixture
def system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    with checked_system(request.param) as asys:
        yield asys


def base_of(asys: ActorSystem) -> str:
    return TCP if Base.of(asys).name == TCP else QUEUE




def assert_all_once_in_order(directory: Path, accepted: list[int]) -> None:
    sent = delivered(directory)
    missing = sorted(set(accepted) - set(sent))
    assert not missing, f"{len(missing)} accepted ids lost: {missing[:20]}"
    assert len(sent) == len(set(sent)), f"{len(sent) - len(set(sent))} duplicates"
    assert sent == sorted(accepted)


# ---- sink faults ----------------------------------------------------------------------------



class Killer(threading.Thread):
    """SIGKILLs, from outside, every exporter the sink announced as a victim."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.done = threading.Event()
        self.killed: set[int] = set()

    def run(self) -> None:
        while not self.done.wait(0.01):
            for pid in set(victims(self.directory)) - self.killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.killed.add(pid)


KILLING = ("hang", "exit", "victim")


def sizes(base: str, fault: str) -> tuple[int, int]:
    """(messages, every): many deaths on TCP; few on Queue, which notices one in ~2 s."""
    if fault not in KILLING:
        return 120, 3
    return (200, 2) if base == TCP else (40, 4)


SINK_FAULTS = [
    # fault, export_timeout, reason recorded for every retry
    pytest.param("raise", 0.3, "ConnectionError", id="raise-share"),
    pytest.param("return", 0.3, "ConnectionError", id="return-share"),
    pytest.param("down", 0.3, "ConnectionError", id="down-then-recovers"),
    pytest.param("hang", 0.3, "'killed'", id="hang-past-export-timeout"),
    pytest.param("exit", 0.3, "'exited'", id="os-exit"),
    pytest.param("exit", None, "'exited'", id="os-exit-no-export-timeout"),
    pytest.param("victim", 3.0, "'exited'", id="sigkill-from-outside"),
    pytest.param("victim", None, "'exited'", id="sigkill-from-outside-no-export-timeout"),
]


@pytest.mark.parametrize("system", BASES, indirect=True)
@pytest.mark.parametrize(("fault", "export_timeout", "reason"), SINK_FAULTS)
@pytest.mark.parametrize("batches_per_exporter", [1, None], ids=["fresh", "reused"])
def test_sink_fault_loses_nothing(system: ActorSystem, tmp_path: Path, fault: str,
                                  export_timeout: float | None, reason: str,
                                  batches_per_exporter: int | None) -> None:
    """Also with reused exporters: a faulting one is never given another batch."""
    base = base_of(system)
    n, every = sizes(base, fault)
    if fault == "down":
        (tmp_path / "down").touch()
    killer = Killer(tmp_path)
    killer.start()
    try:
        server = Pachka.start(system=system, sink=FaultSink(tmp_path, fault, every),
                              max_batch_size=10, max_batch_delay=0.02,
                              export_timeout=export_timeout,
                              batches_per_exporter=batches_per_exporter)
        for i in range(n):
            server.send_message(i)  # the default lingering handle
        if fault == "down":
            wait_for(lambda: len(records(tmp_path, "retry")) >= 3)
            os.remove(tmp_path / "down")
        server.stop(timeout=8)
    finally:
        (tmp_path / "heal").touch()  # a stalled server drains at shutdown without faults
        killer.done.set()
        killer.join()
    assert_all_once_in_order(tmp_path, list(range(n)))
    retries = records(tmp_path, "retry")
    reasons = {reason}
    if base == QUEUE and fault == "exit" and export_timeout is not None:
        reasons.add("'killed'")  # Queue notices a death after ~2 s: export_timeout comes first
    assert retries and all(any(allowed in r["reason"] for allowed in reasons)
                           for r in retries), retries
    if fault in KILLING:  # every faulting exporter is gone, none lingers
        faulted = [a["pid"] for i, a in enumerate(records(tmp_path, "attempt"))
                   if i % every == 0]
        for pid in faulted:
            wait_for(lambda: process_gone(pid), 5)  # noqa: B023


# ---- the server gets ActorExitRequest (what ActorSystem.shutdown() sends) mid-export --------

M = 100


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("drain", [False, True], ids=["send-batch", "drain-on-terminate"])
@pytest.mark.parametrize("producer", ["send_messages", "send_message"])
def test_shutdown_mid_export_loses_nothing(tmp_path: Path, base: str, drain: bool,
                                           producer: str) -> None:
    sink = (DrainingFaultSink if drain else FaultSink)(tmp_path, "slow", slow=0.05)
    with checked_system(base) as asys:
        server = Pachka.start(system=asys, sink=sink, max_batch_size=10,
                              max_batch_delay=0.02, export_timeout=0.3)
        if producer == "send_messages":
            assert server.send_messages(range(M)) == M
        else:
            for i in range(M):
                server.send_message(i)
        [first] = wait_for(lambda: records(tmp_path, "attempt")[:1])
        assert first["ids"][0] == 0  # an export runs; the system shuts down now
    sent = delivered(tmp_path)
    assert set(sent) == set(range(M)), f"lost: {sorted(set(range(M)) - set(sent))[:20]}"
    first_seen = list(dict.fromkeys(sent))
    assert first_seen == list(range(M))  # duplicates only by a re-export of a killed batch


# ---- stop(timeout) with a slow sink: ActorTimeout, and the server drains on ---------------------


@pytest.mark.parametrize("system", BASES, indirect=True)
def test_stop_timeout_raises_but_server_delivers_everything(system: ActorSystem,
                                                            tmp_path: Path) -> None:
    server = Pachka.start(system=system, sink=FaultSink(tmp_path, "slow", slow=0.05),
                          max_batch_size=5, max_batch_delay=0.02, export_timeout=0.3)
    for i in range(M):
        server.send_message(i)
    started = time.monotonic()
    with pytest.raises(ActorTimeout):
        server.stop(timeout=0.3)
    assert time.monotonic() - started < 5
    wait_for(lambda: len(set(delivered(tmp_path))) == M, 30)
    assert_all_once_in_order(tmp_path, list(range(M)))
    [server_pid] = {batch["ppid"] for batch in records(tmp_path, "batch")}
    wait_for(lambda: process_gone(server_pid), 10)  # it exited by itself once drained


# ---- overload bursts -----------------------------------------------------------------------

QUEUE_SIZE, BATCH, PER_PRODUCER, PRODUCERS = 30, 5, 40, 4


def burst(send: Callable[[int], None], first: int) -> tuple[list[int], list[int], list[Any]]:
    """Try PER_PRODUCER ids; the accepted, the refused, and any other error."""
    accepted, refused, errors = [], [], []
    for i in range(first, first + PER_PRODUCER):
        try:
            send(i)
        except Overloaded:
            refused.append(i)
        except Exception as exc:
            errors.append(exc)
            refused.append(i)
        else:
            accepted.append(i)
    return accepted, refused, errors


def run_threads(server: Pachka, asys: ActorSystem, shared: bool,
                linger: float | None) -> tuple[list[int], list[int], list[Any]]:
    results: list[tuple[list[int], list[int], list[Any]]] = []
    lock = threading.Lock()

    def producer(index: int) -> None:
        handle = server if shared else Pachka.connect(asys, server.address, linger=linger,
                                                      ask_timeout=5)
        result = burst(handle.send_message, index * 1000)
        if not shared:
            try:
                handle.close()
            except Exception as exc:
                result[2].append(exc)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=producer, args=(n,), daemon=True)
               for n in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 12
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert len(results) == PRODUCERS, "producer threads hung (ask_timeout is 5 s)"
    return ([i for r in results for i in r[0]], [i for r in results for i in r[1]],
            [e for r in results for e in r[2]])


def run_processes(asys: ActorSystem, directory: Path) -> tuple[list[int], list[int], list[Any]]:
    port = asys._systemBase.adminAddr.addressDetails.sockname[1]
    script = Path(__file__).with_name("fault_sinks.py")
    outs = [directory / f"producer-{n}.json" for n in range(PRODUCERS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    logs = [open(directory / f"producer-{n}.log", "w") for n in range(PRODUCERS)]  # noqa: SIM115
    try:
        procs = [subprocess.Popen([sys.executable, str(script), str(port), "burst",
                                   str(n * 1000), str(PER_PRODUCER), str(out)],
                                  stdout=log, stderr=log, env=env)
                 for n, (out, log) in enumerate(zip(outs, logs, strict=True))]
        codes = [proc.wait(60) for proc in procs]
    finally:
        for log in logs:
            log.close()
    errors: list[Any] = [f"producer {n} exited {code}: "
                         f"{(directory / f'producer-{n}.log').read_text()[-2000:]}"
                         for n, code in enumerate(codes) if code != 0]
    accepted = [i for out in outs if out.exists() for i in json.loads(out.read_text())]
    attempted = {n * 1000 + i for n in range(PRODUCERS) for i in range(PER_PRODUCER)}
    return accepted, sorted(attempted - set(accepted)), errors



@pytest.mark.parametrize("system", [TCP], indirect=True)
@pytest.mark.parametrize(("mode", "linger"), [
    pytest.param("thread-per-handle", None, id="threads-own-handle-linger-none"),
    pytest.param("thread-per-handle", "default", id="threads-own-handle-lingering"),
    pytest.param("threads-shared-handle", None, id="threads-shared-handle-linger-none"),
    pytest.param("threads-shared-handle", "default", id="threads-shared-handle-lingering"),
    pytest.param("processes", "default", id="processes-lingering"),
])
def test_overload_burst_is_exact(system: ActorSystem, tmp_path: Path, mode: str,
                                 linger: str | None) -> None:
    (tmp_path / "block").touch()  # nothing is delivered during the burst
    handle_linger: dict[str, Any] = {} if linger == "default" else {"linger": None}
    server = Pachka.start(system=system, sink=FaultSink(tmp_path, "block"), name="burst",
                          max_batch_size=BATCH, critical_queue_size=QUEUE_SIZE,
                          # only a full batch goes out: a batch timer firing between two
                          # messages of a slow (loaded) burst would send a short one
                          max_batch_delay=60, export_timeout=None, ask_timeout=5,
                          **handle_linger)
    if mode == "processes":
        accepted, refused, errors = run_processes(system, tmp_path)
    else:
        accepted, refused, errors = run_threads(server, system, mode.startswith("threads-shared"),
                                                None if linger is None else 0.005)
    assert not errors, errors
    assert len(accepted) + len(refused) == PRODUCERS * PER_PRODUCER
    assert not set(accepted) & set(refused)
    # Pachka's exactness: one full batch in flight plus a full queue (issue 11 point 10).
    assert len(accepted) == QUEUE_SIZE + BATCH
    os.remove(tmp_path / "block")
    server.stop(timeout=30)
    sent = delivered(tmp_path)
    assert not set(sent) & set(refused), "a refused message was delivered"
    assert sorted(sent) == sorted(accepted), "accepted != delivered"


# ---- unpicklable, huge and odd messages ----------------------------------------------------

ODD: dict[str, Any] = {
    "none": None,
    "nested": {"a": [1, (2, 3), {"b": {4, 5}}], "c": None},
    "bytes": b"\x00\xffbinary",
    "custom": Custom([1, "two"]),
    "huge": b"h" * (11 * 2**20),
}


@pytest.mark.parametrize("system", [TCP], indirect=True)
@pytest.mark.parametrize("linger", ["default", None])
@pytest.mark.parametrize("api", ["send_message", "send_messages"])
@pytest.mark.parametrize("payload", [*ODD, "unpicklable"])
def test_odd_message(system: ActorSystem, tmp_path: Path, payload: str, api: str,
                     linger: str | None, request: pytest.FixtureRequest) -> None:
    options: dict[str, Any] = {} if linger == "default" else {"linger": None}
    server = Pachka.start(system=system, sink=FaultSink(tmp_path), max_batch_size=10,
                          max_batch_delay=0.02, **options)
    before, after = list(range(15)), list(range(15, 30))

    def send(messages: list[Any]) -> None:
        if api == "send_message":
            for message in messages:
                server.send_message(message)
        else:
            assert server.send_messages(messages) == len(messages)

    send(before)
    if payload == "unpicklable":
        with pytest.raises(Exception, match=r"(?i)pickl|lock") as error:
            send([threading.Lock()])
        assert not isinstance(error.value, ActorTimeout)
        expected = before + after
    else:
        send([ODD[payload]])
        expected = [*before, ODD[payload], *after]
    send(after)
    server.stop(timeout=30)
    assert delivered(tmp_path) == expected


# ---- bad configuration -----------------------------------------------------------------------

BAD_SERVER = [
    ("max_batch_size", 0), ("max_batch_size", "5"), ("critical_queue_size", -1),
    ("max_batch_delay", -1), ("max_batch_delay", "soon"), ("export_timeout", float("nan")),
    ("credit_timeout", timedelta(seconds=-2)), ("timers", "cron"), ("name", ""),
    ("server_value", threading.Lock()), ("sink", None), ("sink", object()), ("colour", "red"),
]
BAD_INFINITE = [("max_batch_delay", float("inf")), ("export_timeout", 1e300),
                ("credit_timeout", float("inf"))]
BAD_HANDLE = [
    ("linger", -1), ("linger", "fast"), ("buffer_size", "10"), ("buffer_size", 0),
    ("ask_timeout", "x"), ("ask_timeout", -1),
]
BAD_HANDLE_INFINITE = [("linger", float("inf"))]


@pytest.fixture(scope="module")
def config_system() -> Iterator[tuple[ActorSystem, int]]:
    with checked_system(TCP) as asys:
        sid = asys.ask(asys.createActor(SessionProbe), "sid", 10)
        yield asys, sid


def _params(cases: list[tuple[str, Any]], mark: pytest.MarkDecorator | None = None) -> list[Any]:
    return [pytest.param(option, value, id=f"{option}={value!r}"[:40],
                         marks=() if mark is None else (mark,)) for option, value in cases]


@pytest.mark.parametrize(("option", "value"), [
    *_params(BAD_SERVER), *_params(BAD_HANDLE),
    *_params(BAD_INFINITE), *_params(BAD_HANDLE_INFINITE),
])
def test_bad_start_option_creates_no_actor(config_system: tuple[ActorSystem, int],
                                           tmp_path: Path, option: str, value: Any) -> None:
    asys, sid = config_system
    before = sorted(session_pids(sid))
    options = {"sink": RecordingSink(tmp_path), "ask_timeout": 10, option: value}
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=asys, **options)
    assert error.value.option == option and option in str(error.value)
    assert sorted(session_pids(sid)) == before


@pytest.mark.parametrize(("option", "value"), [
    *_params(BAD_HANDLE), *_params(BAD_HANDLE_INFINITE),
])
def test_bad_connect_option_creates_no_actor(option: str, value: Any) -> None:
    class ExplodingSystem:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"an actor system was used: system.{name}")

    with pytest.raises(ConfigError) as error:
        Pachka.connect(ExplodingSystem(), "events", **{option: value})
    assert error.value.option == option
