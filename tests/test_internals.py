"""The internals the shells lean on: Thespian's private attributes, /proc, error pickling."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
from thespian.actors import Actor, ActorAddress, ActorSystem

from pachka_actors import errors
from pachka_actors._process_old import ProcessId
from pachka_actors._thespian import (
    base_name,
    child_process,
    exit_children,
    forget_dead_children,
    is_status_of,
    notices_exits_at_once,
    runs_in_caller_thread,
    status_request,
)


class Parent(Actor):  # type: ignore[misc]
    """Creates a child and reports what `_thespian` can see of it."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "probe":
            child = self.createActor(Actor)
            process = child_process(self, child)
            self.send(sender, (process, exit_children(self), child, os.getpid()))
        elif message == "notices exits at once?":
            self.send(sender, notices_exits_at_once(self))
        elif message == "two, one killed":  # they answer once up: Thespian then awaits them
            self.asker, self.pongs = sender, []
            for _ in range(2):
                self.send(self.createActor(Pinged), "ping")
        elif isinstance(message, int):
            self.pongs.append((sender, message))
            if len(self.pongs) == 2:
                (live, _), (dead, pid) = self.pongs
                process = ProcessId(pid, socket.gethostname())
                assert process.kill() and process.wait_ended(5.0)
                forget_dead_children(self)  # no message is handled meanwhile: no report came
                children = exit_children(self) or []
                self.send(self.asker, (live in children, dead in children))


class Pinged(Actor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "ping":
            self.send(sender, os.getpid())


def test_thespian_internals_are_there_on_a_multiprocess_base(tcp_system: ActorSystem) -> None:
    """Fails loudly when an installed Thespian no longer has what `_thespian` reads."""
    assert base_name(tcp_system) == "multiprocTCPBase"
    assert not runs_in_caller_thread(tcp_system)
    process, children, child, parent_pid = tcp_system.ask(tcp_system.createActor(Parent),
                                                          "probe", 10)
    assert isinstance(process, ProcessId), "Thespian's _myRef._child_procs is gone"
    assert process.pid != parent_pid and not process.ended()
    assert isinstance(children, list) and child in children, "Thespian's _myRef._children"
    parent = tcp_system.createActor(Parent)
    assert tcp_system.ask(parent, "notices exits at once?", 10) is True, \
        "Thespian's _myRef.transport (its class tells TCP from Queue)"
    assert is_status_of(tcp_system.ask(parent, status_request(), 10), parent), \
        "Thespian's status request (ask's liveness probe) is not answered as expected"


def test_dead_children_are_not_awaited_at_exit(tcp_system: ActorSystem) -> None:
    """Issue 11 point 20: a child reaped unreported stayed on Thespian's exit list, so the
    parent's exit (and `shutdown()`) waited for it and left processes behind."""
    live_awaited, dead_awaited = tcp_system.ask(tcp_system.createActor(Parent),
                                                "two, one killed", 10)
    assert live_awaited and not dead_awaited


def test_simple_base_is_recognised(simple_system: ActorSystem) -> None:
    assert base_name(simple_system) == "simpleSystemBase"
    assert runs_in_caller_thread(simple_system)
    process, children, _, _ = simple_system.ask(simple_system.createActor(Parent), "probe", 10)
    assert process is None and children is None  # no processes: "unknown", not a guess


def test_process_kill_and_ended() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        process = ProcessId(child.pid, socket.gethostname())
        assert process.killable() and not process.ended()
        assert process.kill()
        assert process.wait_ended(5.0)  # a zombie until reaped: ended all the same
    finally:
        child.kill()
        child.wait()
    assert process.ended() and not process.kill()


def test_process_ended_notices_a_reused_pid_by_its_parent() -> None:
    me = ProcessId.current()
    assert not me.ended() and not me.killable()  # never SIGKILL ourselves
    assert me.ended(parent=os.getpid())  # not our own child: that pid "is someone else"
    assert not ProcessId(os.getpid(), "another-host").killable()


def test_kill_tree_kills_descendants() -> None:
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(c.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    grandchild = ProcessId(int(parent.stdout.readline()), socket.gethostname())
    try:
        assert ProcessId(parent.pid, socket.gethostname()).kill_tree()
        parent.wait(5)
        assert grandchild.wait_ended(5.0)
    finally:
        parent.kill()
        parent.wait()
        if not grandchild.ended():
            os.kill(grandchild.pid, signal.SIGKILL)


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
