"""The internals the shells lean on: Thespian's private attributes, pidfds, /proc, pickling."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sinks import wait_for
from thespian.actors import Actor, ActorAddress, ActorSystem, InvalidActorAddress

from pachka_actors import errors, systems
from pachka_actors._base import (
    Base,
    child_pid,
    exit_children,
    forget_children,
    forget_dead_children,
    is_status_of,
    status_request,
)
from pachka_actors._exporters import Export, ExporterPool, Hello, Member, Outcome, Phase, Prepare
from pachka_actors._link import Link
from pachka_actors._process import DeathWatch, ended, kill_tree
from pachka_actors.sink import Batch, Sink


class Parent(Actor):  # type: ignore[misc]
    """Creates children and reports what `_base` can see of them."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "probe":
            child = self.createActor(Actor)
            self.send(sender, (Base.of(self), child_pid(self, child), exit_children(self),
                               child, os.getpid()))
        elif message in ("forget dead", "forget one"):  # they answer once up: Thespian
            self.asker, self.forget, self.pongs = sender, message, []  # then awaits them
            for _ in range(2):
                self.send(self.createActor(Pinged), "ping")
        elif isinstance(message, int):
            self.pongs.append((sender, message))
            if len(self.pongs) == 2:
                (live, _), (dead, pid) = self.pongs
                watch: DeathWatch[str] = DeathWatch()
                watch.watch("dead", pid)
                assert watch.kill("dead") and watch.dead(5.0) == ["dead"]
                # no message is handled meanwhile: no report of the death came
                if self.forget == "forget dead":
                    forget_dead_children(self)
                else:
                    forget_children(self, [dead])
                children = exit_children(self) or []
                self.send(self.asker, (live in children, dead in children))


class Pinged(Actor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "ping":
            self.send(sender, os.getpid())


def test_thespian_internals_are_there_on_a_multiprocess_base(tcp_system: ActorSystem) -> None:
    """Fails loudly when an installed Thespian no longer has what `_base` reads."""
    assert Base.of(tcp_system) == Base("multiprocTCPBase")
    assert not Base.of(tcp_system).inline
    base, pid, children, child, parent_pid = tcp_system.ask(tcp_system.createActor(Parent),
                                                            "probe", 10)
    assert base == Base("multiprocTCPBase"), \
        "Thespian's _myRef.transport (its class tells an actor's base)"
    assert base.notices_exits_at_once and base.watches_files
    assert isinstance(pid, int), "Thespian's _myRef._child_procs is gone"
    assert pid != parent_pid and not ended(pid)
    assert isinstance(children, list) and child in children, "Thespian's _myRef._children"
    parent = tcp_system.createActor(Parent)
    assert is_status_of(tcp_system.ask(parent, status_request(), 10), parent), \
        "Thespian's status request (ask's liveness probe) is not answered as expected"


def test_queue_base_is_recognised(queue_system: ActorSystem) -> None:
    assert Base.of(queue_system) == Base("multiprocQueueBase")
    base, pid, _, _, _ = queue_system.ask(queue_system.createActor(Parent), "probe", 10)
    assert base == Base("multiprocQueueBase") and not base.inline and isinstance(pid, int)
    assert not base.notices_exits_at_once and not base.watches_files


@pytest.mark.parametrize("how", ["forget dead", "forget one"])
def test_dead_children_are_not_awaited_at_exit(tcp_system: ActorSystem, how: str) -> None:
    """Issue 11 point 20: a child reaped unreported stayed on Thespian's exit list, so the
    parent's exit (and `shutdown()`) waited for it and left processes behind."""
    live_awaited, dead_awaited = tcp_system.ask(tcp_system.createActor(Parent), how, 10)
    assert live_awaited and not dead_awaited


def test_simple_base_is_recognised(simple_system: ActorSystem) -> None:
    assert Base.of(simple_system).inline
    base, pid, children, _, _ = simple_system.ask(simple_system.createActor(Parent), "probe", 10)
    assert base.inline and not base.notices_exits_at_once
    assert pid is None and children is None  # no processes: "unknown", not a guess


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def test_death_watch_tells_a_killed_child(sleeper: subprocess.Popen[bytes]) -> None:
    watch: DeathWatch[str] = DeathWatch()
    watch.watch("child", sleeper.pid)
    assert watch.pid("child") == sleeper.pid and list(watch.fds().values()) == ["child"]
    assert watch.dead() == [] and not ended(sleeper.pid)
    assert watch.kill("child")
    assert watch.dead(5.0) == ["child"]  # a zombie until reaped: ended all the same
    assert ended(sleeper.pid) and watch.pid("child") is None and not watch.kill("child")


def test_death_watch_never_kills_a_reaped_child(sleeper: subprocess.Popen[bytes]) -> None:
    """A child whose pidfd says it ended is not signalled: its pid may be another's now."""
    watch: DeathWatch[str] = DeathWatch()
    watch.watch("child", sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    assert not watch.kill("child")
    watch.watch("gone", sleeper.pid)  # reaped before it was watched: dead at once
    assert watch.dead() + watch.dead() == ["gone", "child"]
    assert watch.fds() == {}


def test_kill_tree_spares_this_process() -> None:
    assert not kill_tree(os.getpid()) and not ended(os.getpid())


def test_kill_tree_kills_descendants() -> None:
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(c.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    try:
        assert kill_tree(parent.pid)
        parent.wait(5)
        wait_for(lambda: ended(grandchild), 5.0)
    finally:
        parent.kill()
        parent.wait()
        if not ended(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert not kill_tree(parent.pid)  # reaped: nothing live to kill


@pytest.mark.parametrize("error", [
    errors.ConfigError("max_batch_size", "must be >= 1, got 0"),
    errors.Overloaded("full", terminating=True),
    errors.AlreadyStarted("events"),
    errors.NotStarted("nobody there"),
    errors.ActorTimeout("no reply"),
    errors.SinkError("RuntimeError: down"),
    errors.StartChildError("repo", RuntimeError("boom")),
    errors.ChildNotFound("repo"),
    errors.ChildRunning("repo"),
    errors.AlreadyPresent("repo", running=True),
    errors.SupervisorError("stopping"),
])
def test_errors_cross_processes_intact(error: errors.PachkaError) -> None:
    """Errors travel as replies between processes: pickling must keep every attribute."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert {k: repr(v) for k, v in vars(copy).items()} == \
        {k: repr(v) for k, v in vars(error).items()}


class _Ref:
    """Stands in for Thespian's record of an actor's children."""

    def __init__(self, children: list[Any]) -> None:
        self._children = children
        self._child_procs: list[Any] = []


class _Dying:
    """A death watch whose every watched exporter has died."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def dead(self, timeout: float = 0.0) -> list[int]:
        ids, self.ids = self.ids, []
        return ids


def test_a_long_lived_pool_forgets_dead_exporters_as_they_die() -> None:
    """Found by a new user: one exporter dies per batch, and the pool kept every dead one's
    address to forget at exit, where a quadratic search through Thespian's list took
    8 s after 4,000 batches (and outlived `shutdown()` past ~5,000). Now it keeps the
    last few, and the exit forgets the older ones as dead processes."""
    addresses = [f"exporter-{n}" for n in range(1000)]
    actor = Actor()
    actor._myRef = _Ref(list(addresses))
    pool = ExporterPool(actor, Base("multiprocTCPBase"), Sink(), None, 1)
    try:
        for n, address in enumerate(addresses):
            pool.members[n] = Member(n, Phase.IDLE, address=address)
        pool.watch = _Dying(list(range(1000)))  # type: ignore[assignment]
        pool.poll()
        assert len(pool._ended) < len(addresses) and not pool.members  # bounded
        pool.forget()  # at exit: the older ones are forgotten as dead processes
        assert actor._myRef._children == []
    finally:
        pool.closed = True
        if pool.listener is not None:
            pool.listener.close()


class _Creator(Actor):  # type: ignore[misc]
    """A server whose exporters never start: on multiprocQueueBase, a new exporter waiting
    for room in the server's full Thespian queue, which a bare exit does not read."""

    def createActor(self, *args: Any, **kwargs: Any) -> str:
        return "never-started"

    def send(self, *args: Any) -> None:
        """An `ActorExitRequest` to a retired exporter goes nowhere: it has no process."""


def test_a_bare_exit_moves_a_batch_from_an_exporter_that_never_connected(
        sleeper: subprocess.Popen[bytes]) -> None:
    """CI, ~4% of runs of test_handle_exit on multiprocQueueBase: the batch in flight when
    the exit began was held by an exporter not connected yet, whose start-up was blocked on
    the server's full queue; it waited for `export_timeout`, the rest was lost at
    `shutdown_timeout`. The exporter that had served its one batch was retired by then.
    Now it stays until another is connected, and the exit hands it the batch."""
    pool = ExporterPool(_Creator(), Base("multiprocQueueBase"), Sink(), None, 1)
    assert pool.listener is not None

    def phases() -> dict[int, Phase]:
        return {m.exporter_id: m.phase for m in pool.members.values()}

    exporter = Link.connect(pool.listener.name)  # the first exporter, connected
    try:
        pool.prepare()
        exporter.send(Hello(1, sleeper.pid))
        wait_for(lambda: pool.poll() == [] and pool.members[1].phase is Phase.SPARE)
        assert isinstance(exporter.next(5.0), Prepare)
        assert pool.start(1, Batch([1], "b1"), spare=True) == []
        assert exporter.next(5.0) == Export(1, Batch([1], "b1"))
        exporter.send(Outcome(1))
        assert wait_for(pool.poll) == [Outcome(1)]
        assert phases() == {1: Phase.SPENT, 2: Phase.STARTING}  # the spare never connects
        pool.start(2, Batch([2], "b2"), spare=True)  # to that spare: it waits to connect
        assert phases() == {1: Phase.SPENT, 2: Phase.EXPORTING, 3: Phase.STARTING}
        pool.begin_exit()
        assert exporter.next(5.0) == Export(2, Batch([2], "b2"))  # not Quit
        assert phases() == {1: Phase.EXPORTING, 2: Phase.STARTING, 3: Phase.STARTING}
        assert pool.members[2].export is None
        exporter.send(Outcome(2))
        assert wait_for(pool.poll) == [Outcome(2)]
        pool.start(3, Batch([3], "b3"), spare=True)  # at exit: reused, whatever the limit
        assert exporter.next(5.0) == Export(3, Batch([3], "b3"))
    finally:
        exporter.close()
        pool.closed = True
        pool.listener.close()


def test_a_spare_that_died_unnoticed_is_not_given_the_next_batch(
        sleeper: subprocess.Popen[bytes]) -> None:
    """CI: the exporter and the spare SIGKILLed together, the retry fired before the pool
    had looked at the spare's death: it was given the batch, which failed as "exited" a
    second time (and with manual timers nothing fired the next retry)."""
    pool = ExporterPool(_Creator(), Base("multiprocTCPBase"), Sink(), None, 1)
    assert pool.listener is not None
    exporter = Link.connect(pool.listener.name)
    try:
        pool.prepare()
        exporter.send(Hello(1, sleeper.pid))
        wait_for(lambda: pool.poll() == [] and pool.members[1].phase is Phase.SPARE)
        assert isinstance(exporter.next(5.0), Prepare)
        sleeper.kill()
        sleeper.wait()
        assert pool.start(1, Batch([1], "b1"), spare=True) == []  # before any poll
        assert pool.members[2].phase is Phase.EXPORTING  # a new exporter's, once connected
        assert pool.poll() == [] and 1 not in pool.members  # the dead spare: forgotten
    finally:
        exporter.close()
        pool.closed = True
        pool.listener.close()


def test_a_system_start_that_misses_its_wait_ends_its_admin_and_tries_a_new_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CI saw `InvalidActorAddress` from a fresh port three times in a row under load: the
    second and third attempts asked the same port again. Now each attempt on a port of
    `start_system`'s own choosing gets a new one, and what a failed attempt forked (here a
    stand-in admin, a process in a session of its own) is ended, not left running."""
    ports: list[int] = []
    stand_ins: list[subprocess.Popen[bytes]] = []
    real = ActorSystem

    def slow_then_real(base: str, capabilities: dict[str, Any], **kwargs: Any) -> ActorSystem:
        ports.append(capabilities["Admin Port"])
        if len(ports) == 1:
            stand_ins.append(subprocess.Popen(["sleep", "60"], start_new_session=True))
            raise InvalidActorAddress(None, "not a valid or useable ActorSystem Admin")
        return real(base, capabilities, **kwargs)

    monkeypatch.setattr(systems, "ActorSystem", slow_then_real)
    asys, sid = systems.start_system("multiprocTCPBase")
    try:
        assert len(ports) == 2 and ports[0] != ports[1]
        assert stand_ins[0].wait(timeout=5) == -signal.SIGKILL
        probe = asys.createActor(systems.SessionProbe)
        assert sid is not None and asys.ask(probe, "sid", 10) == sid  # the system works
    finally:
        for stand_in in stand_ins:
            stand_in.kill()
            stand_in.wait()
        systems.shutdown_system(asys, sid)


def test_messages_lost_counts_in_words() -> None:
    """"1 messages ... were lost" read as a typo in the one error a program must not miss."""
    said = "accepted by the handle"
    assert str(errors.MessagesLost(1, "gone")) == f"1 message {said} was lost: gone"
    assert str(errors.MessagesLost(3, "gone")) == f"3 messages {said} were lost: gone"


def test_a_child_whose_parent_died_before_it_asked_to_die_with_it_dies_at_once() -> None:
    """An exporter SIGKILLed with its server while Thespian was still starting it asked
    for PR_SET_PDEATHSIG only once orphaned, and lived on (1 of ~50 runs of
    test_sigkilled_server_takes_its_exporters_along under load): it now names the server
    it was started by, and one already gone kills it at once."""
    gone = subprocess.run([sys.executable, "-c", "import os, signal\n"
                           "from pachka_actors._process import die_with_parent\n"
                           "die_with_parent(signal.SIGKILL, parent=os.getppid() + 1)\n"
                           "print('lived on')"], capture_output=True, text=True, timeout=30)
    assert gone.returncode == -signal.SIGKILL and "lived on" not in gone.stdout, gone
    kept = subprocess.run([sys.executable, "-c", "import os, signal\n"
                           "from pachka_actors._process import die_with_parent\n"
                           "die_with_parent(signal.SIGKILL, parent=os.getppid())\n"
                           "print('lived on')"], capture_output=True, text=True, timeout=30)
    assert kept.returncode == 0 and "lived on" in kept.stdout, kept
