"""The supervisor on real Thespian systems (mostly multiprocTCPBase).

Children are `supervised_actors.Worker`s that log start and stop, with their
pid, to a file. Nothing here sleeps and then looks: a test waits for a logged
event or a reply, with a deadline. Supervisor calls are answered only after any
restart under way, so a reply also shows what was decided before it.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
from sinks import calls, wait_for
from supervised_actors import Halt, Init, Plain, Relay, Worker
from support import process_gone
from thespian.actors import ActorExitRequest, ActorSystem

from pachka_actors import ActorTimeout, ChildSpec, ConfigError, Supervisor
from pachka_actors._process import stat
from pachka_actors.config import BRUTAL_KILL, ChildType
from pachka_actors.errors import (
    ActorGone,
    AlreadyPresent,
    ChildNotFound,
    ChildRestarting,
    ChildRunning,
    StartChildError,
    SupervisorError,
)
from pachka_actors.messages import RESTARTING, ChildStarted, StartChild, WhichChildren


def worker(directory: Path, name: str, *, fail: bool = False, stuck: bool = False,
           spawn: bool = False, linger: bool = False, **spec: Any) -> ChildSpec:
    return ChildSpec(name, (Worker, Init(str(directory), name, fail, stuck, spawn, linger)),
                     **spec)


def logged(directory: Path, call: str) -> list[str]:
    """Names of the workers that logged `call` ("start", "stop", "halt"), in order."""
    return [entry["name"] for entry in calls(directory, call)]


def pid(directory: Path, name: str) -> int:
    """The process of the latest start of worker `name`."""
    return int([e for e in calls(directory, "start") if e["name"] == name][-1]["pid"])


def ids(supervisor: Supervisor) -> list[Hashable]:
    return [id for id, _, _ in supervisor.which_children()]


def running(supervisor: Supervisor) -> list[Hashable]:
    return [id for id, address, _ in supervisor.which_children()
            if address not in (None, RESTARTING)]


def exited(supervisor: Supervisor) -> bool:
    """The supervisor actor is gone (an ask to a dead actor fails at once on TCP) or going
    (one that is exiting drops requests)."""
    try:
        Supervisor(supervisor.system, supervisor.address, ask_timeout=0.5).count_children()
    except ActorTimeout:
        return True
    except SupervisorError:  # stopping its children
        pass
    return False


def start(system: ActorSystem, children: list[ChildSpec], **options: Any) -> Supervisor:
    return Supervisor.start(children, system=system, ask_timeout=20, **options)


# ---- start and shutdown order ------------------------------------------------------------


def test_children_start_in_order_and_stop_in_reverse(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a"), ChildSpec("plain", Plain),
                             worker(tmp_path, "b"), worker(tmp_path, "c")])
    assert logged(tmp_path, "start") == ["a", "b", "c"]
    children = sup.which_children()
    assert [(id, type) for id, _, type in children] == [
        ("a", ChildType.WORKER), ("plain", "worker"), ("b", "worker"), ("c", "worker")]
    assert tcp_system.ask(children[1][1], "pid", 10) > 0  # the addresses work
    assert sup.count_children() == {"specs": 4, "active": 4, "supervisors": 0, "workers": 4}
    pids = [pid(tmp_path, name) for name in "abc"]
    sup.stop()
    assert logged(tmp_path, "stop") == ["c", "b", "a"]
    wait_for(lambda: all(process_gone(p) for p in pids))
    assert exited(sup)


def test_a_failed_start_stops_the_started_children_in_reverse_and_names_the_child(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    with pytest.raises(StartChildError) as failure:
        start(tcp_system, [worker(tmp_path, "a"), worker(tmp_path, "b"),
                           worker(tmp_path, "bad", fail=True), worker(tmp_path, "c")])
    assert failure.value.id == "bad"
    assert "'bad'" in str(failure.value) and "bad refuses" in str(failure.value)
    assert logged(tmp_path, "start") == ["a", "b", "bad"]
    # The failed child is ended first (it was still alive), then the others in reverse.
    assert logged(tmp_path, "stop") == ["bad", "b", "a"]
    wait_for(lambda: all(process_gone(pid(tmp_path, name)) for name in ("a", "b", "bad")))


def test_nested_supervisors_start_and_stop_in_tree_order(tcp_system: ActorSystem,
                                                        tmp_path: Path) -> None:
    sub = Supervisor.child_spec(id="sub", children=[worker(tmp_path, "s1"),
                                                    worker(tmp_path, "s2")])
    assert (sub.type, sub.shutdown) == (ChildType.SUPERVISOR, None)
    sup = start(tcp_system, [worker(tmp_path, "a"), sub, worker(tmp_path, "b")])
    assert logged(tmp_path, "start") == ["a", "s1", "s2", "b"]
    assert sup.count_children() == {"specs": 3, "active": 3, "supervisors": 1, "workers": 2}
    nested = Supervisor(tcp_system, dict((i, a) for i, a, _ in sup.which_children())["sub"],
                        ask_timeout=20)
    assert ids(nested) == ["s1", "s2"]
    sup.stop()
    assert logged(tmp_path, "stop") == ["b", "s2", "s1", "a"]


# ---- shutdown timeouts and kills ---------------------------------------------------------


def test_a_child_stuck_in_its_stop_handler_is_killed_after_its_timeout(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    sup = start(tcp_system, [
        worker(tmp_path, "first", shutdown=1.0),
        worker(tmp_path, "stuck", stuck=True, spawn=True, shutdown=0.5),
        worker(tmp_path, "brutal", shutdown=BRUTAL_KILL),
        worker(tmp_path, "last", shutdown=0.5),
    ])
    stuck = calls(tmp_path, "start")[1]
    began = time.monotonic()
    sup.stop()
    took = time.monotonic() - began
    # "brutal" is killed without its stop handler; "stuck" ran its handler, then was
    # killed, together with the actor it had started itself; the next child still stopped.
    assert logged(tmp_path, "stop") == ["last", "stuck", "first"]
    assert process_gone(pid(tmp_path, "brutal"))
    wait_for(lambda: process_gone(stuck["pid"]) and process_gone(stuck["grandchild"]))
    assert 0.5 <= took < 1.0 + 0.5 + 0.5  # the sum of the timeouts


def test_a_child_stuck_inside_a_handler_is_killed(tcp_system: ActorSystem,
                                                  tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a", shutdown=0.3)])
    tcp_system.tell(sup.which_children()[0][1], "hang")
    sup.terminate_child("a")  # its ActorExitRequest is never read
    assert logged(tmp_path, "stop") == []
    wait_for(lambda: process_gone(pid(tmp_path, "a")))
    assert sup.which_children() == [("a", None, ChildType.WORKER)]


@pytest.mark.multiproc
def test_actor_system_shutdown_stops_children_in_reverse_order(tmp_path: Path) -> None:
    """A bare ActorExitRequest still gets the ordered, timed stop on the multi-process bases."""
    from support import actor_system

    with actor_system("multiprocTCPBase") as system:
        start(system, [worker(tmp_path, "a"), worker(tmp_path, "stuck", stuck=True,
                                                     shutdown=0.3),
                       Supervisor.child_spec(id="sub", children=[worker(tmp_path, "s")]),
                       worker(tmp_path, "b")])
        pids = [pid(tmp_path, name) for name in ("a", "stuck", "s", "b")]
        system.shutdown()
    assert logged(tmp_path, "stop") == ["b", "s", "stuck", "a"]
    assert all(process_gone(p) for p in pids)


def test_a_bare_exit_request_to_the_supervisor_stops_in_order(tcp_system: ActorSystem,
                                                              tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a"), worker(tmp_path, "b", stuck=True,
                                                           shutdown=0.3),
                             worker(tmp_path, "c", shutdown=BRUTAL_KILL)])
    pids = [pid(tmp_path, name) for name in "abc"]
    tcp_system.tell(sup.address, ActorExitRequest())
    wait_for(lambda: all(process_gone(p) for p in pids))
    assert logged(tmp_path, "stop") == ["b", "a"]
    wait_for(lambda: exited(sup))


# ---- deaths: a child has exited once its process has ended --------------------------------


def test_children_killed_together_are_all_restarted(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    """Thespian reports one of several children that die together (it reaps the others
    without a word): each look at the death watch takes every death."""
    names = ["a", "b", "c", "d"]
    sup = start(tcp_system, [worker(tmp_path, name) for name in names], max_restarts=100)

    def started(times: int) -> bool:
        return len(logged(tmp_path, "start")) == times * len(names)

    for times in (2, 3, 4):
        for process in [pid(tmp_path, name) for name in names]:
            os.kill(process, signal.SIGKILL)
        wait_for(functools.partial(started, times))
        assert sorted(logged(tmp_path, "start")[-len(names):]) == names
        assert running(sup) == names
    sup.stop()
    assert logged(tmp_path, "stop") == ["d", "c", "b", "a"]


def test_children_killed_as_the_supervisor_exits_leave_nothing_behind(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    """Deaths and a bare ActorExitRequest at once: whatever the supervisor saw first
    (restarts may begin), every child process ends and the supervisor exits."""
    sup = start(tcp_system, [worker(tmp_path, name, shutdown=1.0) for name in "abcd"])
    for name in "bc":
        os.kill(pid(tmp_path, name), signal.SIGKILL)
    tcp_system.tell(sup.address, ActorExitRequest())
    wait_for(lambda: exited(sup))
    def running() -> list[tuple[dict[str, Any], list[str] | None]]:
        return [(e, stat(e["pid"])) for e in calls(tmp_path, "start") if not process_gone(e["pid"])]

    try:
        wait_for(lambda: not running())
    except AssertionError:  # once in many full runs: say who lived on, and in what state
        raise AssertionError(f"still running 20 s after the exit: {running()}; "
                             f"stopped: {logged(tmp_path, 'stop')}") from None
    assert {"a", "d"} <= set(logged(tmp_path, "stop"))


def test_a_child_whose_process_outlives_its_actor_blocks_no_call(tcp_system: ActorSystem,
                                                                 tmp_path: Path) -> None:
    """Thespian reports a child's exit as its actor ends; its process may run on (here a
    non-daemon thread keeps it). The supervisor looks for the process's end on wakeups,
    never waiting inside a handler: calls are answered meanwhile. The child counts as
    exited, and is restarted, once its process has ended."""
    sup = start(tcp_system, [worker(tmp_path, "a", linger=True)])
    first = pid(tmp_path, "a")
    tcp_system.tell(sup.which_children()[0][1], ActorExitRequest())
    wait_for(lambda: logged(tmp_path, "stop") == ["a"])
    slowest, until = 0.0, time.monotonic() + 1.5
    while time.monotonic() < until:
        began = time.monotonic()
        assert sup.count_children()["active"] == 1  # its process runs on
        slowest = max(slowest, time.monotonic() - began)
    assert slowest < 0.5, f"a call waited {slowest:.2f} s"
    assert logged(tmp_path, "start") == ["a"] and not process_gone(first)
    (tmp_path / "a-release").touch()
    wait_for(lambda: logged(tmp_path, "start") == ["a", "a"])
    assert process_gone(first)
    sup.stop()


def test_terminate_child_returns_once_the_process_has_ended(tcp_system: ActorSystem,
                                                            tmp_path: Path) -> None:
    """The actor stopped when asked, its process did not: it is killed after its shutdown
    timeout, and only then counts as terminated."""
    sup = start(tcp_system, [worker(tmp_path, "a", linger=True, shutdown=0.3),
                             worker(tmp_path, "b", linger=True, shutdown=0.3)])
    first = pid(tmp_path, "a")
    began = time.monotonic()
    sup.terminate_child("a")
    assert process_gone(first)
    assert time.monotonic() - began >= 0.3
    assert logged(tmp_path, "stop") == ["a"]
    # The same at a bare exit, where no wakeup comes: the kill timer runs on a thread.
    second = pid(tmp_path, "b")
    tcp_system.tell(sup.address, ActorExitRequest())
    wait_for(lambda: process_gone(second))
    wait_for(lambda: exited(sup))
    assert logged(tmp_path, "stop") == ["a", "b"]


def test_queue_base_sees_a_kill_at_once(queue_system: ActorSystem, tmp_path: Path) -> None:
    """multiprocQueueBase reports a killed child only after its ~2 s poll; the supervisor
    watches the process itself."""
    sup = start(queue_system, [worker(tmp_path, "a"), worker(tmp_path, "b",
                                                            shutdown=BRUTAL_KILL)])
    began = time.monotonic()
    sup.terminate_child("b")
    assert time.monotonic() - began < 1.0
    assert process_gone(pid(tmp_path, "b"))
    sup.stop()
    assert logged(tmp_path, "stop") == ["a"]


# ---- restarts ----------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "stops", "starts"), [
    ("one_for_one", [], ["b"]),
    ("one_for_all", ["c", "a"], ["a", "b", "c"]),
    ("rest_for_one", ["c"], ["b", "c"]),
])
def test_strategies_after_a_child_is_killed(tcp_system: ActorSystem, tmp_path: Path,
                                            strategy: str, stops: list[str],
                                            starts: list[str]) -> None:
    sup = start(tcp_system, [worker(tmp_path, name) for name in "abc"], strategy=strategy)
    os.kill(pid(tmp_path, "b"), signal.SIGKILL)
    wait_for(lambda: len(logged(tmp_path, "start")) == 3 + len(starts))
    assert logged(tmp_path, "start")[3:] == starts
    assert logged(tmp_path, "stop") == stops
    assert running(sup) == ["a", "b", "c"]
    assert not any(process_gone(pid(tmp_path, name)) for name in "abc")
    sup.stop()


def test_restart_types(tcp_system: ActorSystem, tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "perm"),
                             worker(tmp_path, "trans", restart="transient"),
                             worker(tmp_path, "temp", restart="temporary")])
    address = dict((id, a) for id, a, _ in sup.which_children())

    # A transient child killed by a signal exited abnormally: restarted.
    os.kill(pid(tmp_path, "trans"), signal.SIGKILL)
    wait_for(lambda: logged(tmp_path, "start").count("trans") == 2)
    # One that exits normally is not (the reply comes after any restart would have).
    tcp_system.tell(dict((id, a) for id, a, _ in sup.which_children())["trans"],
                    "exit-normally")
    wait_for(lambda: running(sup) == ["perm", "temp"])
    assert logged(tmp_path, "stop") == ["trans"]  # the supervisor ended it

    # A permanent child is restarted even after a normal exit.
    tcp_system.tell(address["perm"], "exit-normally")
    wait_for(lambda: logged(tmp_path, "start").count("perm") == 2)
    # A temporary child is never restarted, and its spec goes.
    os.kill(pid(tmp_path, "temp"), signal.SIGKILL)
    wait_for(lambda: ids(sup) == ["perm", "trans"])
    assert logged(tmp_path, "start").count("temp") == 1
    assert running(sup) == ["perm"]
    sup.stop()


def test_exceeding_the_intensity_stops_everything_and_exits(tcp_system: ActorSystem,
                                                            tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a"), worker(tmp_path, "b")],
                max_restarts=1, max_seconds=60)
    os.kill(pid(tmp_path, "a"), signal.SIGKILL)
    wait_for(lambda: logged(tmp_path, "start") == ["a", "b", "a"])
    os.kill(pid(tmp_path, "a"), signal.SIGKILL)
    wait_for(lambda: exited(sup))
    assert logged(tmp_path, "stop") == ["b"]
    assert logged(tmp_path, "start") == ["a", "b", "a"]
    assert process_gone(pid(tmp_path, "b"))


@pytest.mark.parametrize(("restart", "restarted"), [("permanent", True), ("transient", False)])
def test_the_parent_learns_when_a_nested_supervisor_gives_up(
        tcp_system: ActorSystem, tmp_path: Path, restart: str, restarted: bool) -> None:
    """It exits with Elixir's :shutdown: a permanent one is restarted, a transient one not."""
    sub = Supervisor.child_spec(id="sub", children=[worker(tmp_path, "s")], max_restarts=0,
                                restart=restart)
    sup = start(tcp_system, [worker(tmp_path, "a"), sub])
    os.kill(pid(tmp_path, "s"), signal.SIGKILL)
    if restarted:
        wait_for(lambda: logged(tmp_path, "start") == ["a", "s", "s"])
        wait_for(lambda: running(sup) == ["a", "sub"])
    else:
        wait_for(lambda: running(sup) == ["a"])
        assert logged(tmp_path, "start") == ["a", "s"]
    sup.stop()


def test_a_restart_that_fails_to_start_is_retried_until_the_intensity_is_exceeded(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a"), worker(tmp_path, "b")], max_restarts=2)
    (tmp_path / "b-fails").touch()
    tcp_system.tell(dict((i, a) for i, a, _ in sup.which_children())["b"], "exit-normally")
    wait_for(lambda: exited(sup))
    assert logged(tmp_path, "start").count("b") == 1 + 2  # two restarts allowed, both failed


# ---- handle operations and the message API ---------------------------------------------------


def test_handle_operations(tcp_system: ActorSystem, tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a")])
    address = sup.start_child(worker(tmp_path, "d", stop_message=Halt()))
    assert sup.which_children()[1] == ("d", address, ChildType.WORKER)
    with pytest.raises(AlreadyPresent, match="already started"):
        sup.start_child(worker(tmp_path, "d"))
    with pytest.raises(StartChildError) as failure:
        sup.start_child(worker(tmp_path, "e", fail=True))
    assert failure.value.id == "e"
    assert ids(sup) == ["a", "d"]  # the spec of a child that failed to start is forgotten

    sup.terminate_child("d")
    assert logged(tmp_path, "halt") == ["d"]  # its stop_message, not ActorExitRequest
    assert sup.which_children()[1] == ("d", None, ChildType.WORKER)
    assert sup.count_children() == {"specs": 2, "active": 1, "supervisors": 0, "workers": 2}
    with pytest.raises(AlreadyPresent, match="already present"):
        sup.start_child(worker(tmp_path, "d"))
    with pytest.raises(ChildRunning):
        sup.restart_child("a")
    with pytest.raises(ChildRunning):
        sup.delete_child("a")
    assert sup.restart_child("d") == sup.which_children()[1][1]
    assert logged(tmp_path, "start") == ["a", "d", "e", "d"]
    sup.terminate_child("d")
    sup.delete_child("d")
    assert ids(sup) == ["a"]
    for operation in (sup.terminate_child, sup.restart_child, sup.delete_child):
        with pytest.raises(ChildNotFound, match="'d'"):
            operation("d")
    sup.stop()
    # "e" was ended after its failed start; "d" stops itself on Halt.
    assert logged(tmp_path, "stop") == ["e", "d", "d", "a"]
    assert logged(tmp_path, "halt") == ["d", "d"]


def test_the_handle_stops_the_supervisor_at_the_end_of_a_with_block(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    with start(tcp_system, [worker(tmp_path, "a"), worker(tmp_path, "b")]) as sup:
        assert running(sup) == ["a", "b"]
    assert logged(tmp_path, "stop") == ["b", "a"]
    wait_for(lambda: exited(sup))
    # Also when the block raises; the exception then propagates.
    with pytest.raises(KeyError, match="boom"), start(tcp_system, [worker(tmp_path, "c")]):
        raise KeyError("boom")
    assert logged(tmp_path, "stop") == ["b", "a", "c"]
    wait_for(lambda: process_gone(pid(tmp_path, "c")))


def test_a_second_stop_returns_at_once(any_system: ActorSystem, tmp_path: Path) -> None:
    """And a call to a stopped supervisor raises a public error (`ActorGone` where Thespian
    says so at once, else `ActorTimeout`), never a private class."""
    sup = start(any_system, [worker(tmp_path, "a")])
    sup.stop()
    began = time.monotonic()
    sup.stop()
    assert time.monotonic() - began < 0.5
    with pytest.raises(ActorTimeout) as error:
        sup.count_children()
    assert type(error.value) in (ActorTimeout, ActorGone)
    assert logged(tmp_path, "stop") == ["a"]


def test_stop_of_a_supervisor_stopped_elsewhere_returns(tcp_system: ActorSystem,
                                                       tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a")])
    sup.stop()
    Supervisor(tcp_system, sup.address, ask_timeout=5).stop(5)  # gone: nothing to stop
    assert logged(tmp_path, "stop") == ["a"]


def test_actors_use_the_supervisor_by_message(tcp_system: ActorSystem, tmp_path: Path) -> None:
    sup = start(tcp_system, [worker(tmp_path, "a")])
    relay = tcp_system.createActor(Relay)
    started = tcp_system.ask(relay, ("via", sup.address, StartChild(worker(tmp_path, "b"))), 20)
    assert isinstance(started, ChildStarted) and started.id == "b"
    which = tcp_system.ask(relay, ("via", sup.address, WhichChildren()), 20)
    assert [(id, address) for id, address, _ in which] == [
        (id, address) for id, address, _ in sup.which_children()]
    sup.stop()


# ---- other bases -------------------------------------------------------------------------


def test_simple_system_base_keeps_the_order(simple_system: ActorSystem, tmp_path: Path) -> None:
    """No processes to kill there; ordering and the handle work the same."""
    sup = start(simple_system, [worker(tmp_path, "a"), worker(tmp_path, "b")])
    sup.terminate_child("b")
    sup.restart_child("b")
    sup.stop()
    assert logged(tmp_path, "start") == ["a", "b", "b"]
    assert logged(tmp_path, "stop") == ["b", "b", "a"]


def test_simple_system_base_bare_exit_request_asks_in_reverse_order(
        simple_system: ActorSystem, tmp_path: Path) -> None:
    """Nothing can be awaited there after the handler: each child is asked in turn."""
    sup = start(simple_system, [worker(tmp_path, name) for name in "abc"])
    simple_system.tell(sup.address, ActorExitRequest())
    assert logged(tmp_path, "stop") == ["c", "b", "a"]


def test_queue_base_restarts_a_killed_child(queue_system: ActorSystem, tmp_path: Path) -> None:
    """multiprocQueueBase notices a killed child only after its ~2 s poll."""
    sup = start(queue_system, [worker(tmp_path, "a"), worker(tmp_path, "b")])
    os.kill(pid(tmp_path, "a"), signal.SIGKILL)
    wait_for(lambda: logged(tmp_path, "start") == ["a", "b", "a"])
    sup.stop()
    assert logged(tmp_path, "stop") == ["b", "a"]


# ---- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "option"), [
    ({"id": None}, "id"),
    ({"id": ["unhashable"]}, "id"),
    ({"start": "Worker"}, "start"),
    ({"start": (Worker,)}, "start"),
    ({"start": (Worker, lambda: None)}, "start"),
    ({"restart": "sometimes"}, "restart"),
    ({"shutdown": -1}, "shutdown"),
    ({"shutdown": "brutal"}, "shutdown"),
    ({"type": "manager"}, "type"),
    ({"stop_message": lambda: None}, "stop_message"),
])
def test_bad_child_specs_name_the_field(arguments: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as error:
        ChildSpec(**{"id": "x", "start": Plain, **arguments})
    assert error.value.option == option


@pytest.mark.parametrize(("options", "option"), [
    ({"strategy": "all_for_none"}, "strategy"),
    ({"max_restarts": -1}, "max_restarts"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"children": [Plain]}, "children"),
    ({"children": [ChildSpec("x", Plain), ChildSpec("x", Plain)]}, "id"),
])
def test_bad_supervisor_options_name_the_option(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as error:
        Supervisor.child_spec(**{"id": "sub", "children": [], **options})
    assert error.value.option == option


def test_child_spec_defaults_follow_elixir() -> None:
    spec = ChildSpec("w", Plain)
    assert (spec.restart, spec.shutdown, spec.type, spec.stop_message) == (
        "permanent", 5.0, "worker", None)
    assert ChildSpec("s", Plain, type="supervisor").shutdown is None
    assert ChildSpec("i", Plain, shutdown=float("inf")).shutdown is None


def test_terminate_child_ends_a_restart_loop(tcp_system: ActorSystem, tmp_path: Path) -> None:
    """A child whose start always fails is retried; calls served meanwhile see it restarting
    (Erlang's `:restarting`), and `terminate_child` ends the loop for good."""
    sup = start(tcp_system, [worker(tmp_path, "a"), worker(tmp_path, "b")],
                max_restarts=1000, max_seconds=1.0)
    (tmp_path / "b-fails").touch()
    os.kill(pid(tmp_path, "b"), signal.SIGKILL)
    wait_for(lambda: logged(tmp_path, "start").count("b") >= 3)
    # Every call waits for the try under way, which fails: the child is then restarting.
    assert sup.which_children()[1] == ("b", RESTARTING, ChildType.WORKER)
    with pytest.raises(ChildRestarting, match="'b' is restarting"):
        sup.delete_child("b")
    with pytest.raises(ChildRestarting):
        sup.restart_child("b")
    sup.terminate_child("b")
    tries = logged(tmp_path, "start").count("b")
    # A retry queued before the terminate would have started "b" before this reply.
    assert sup.which_children()[1] == ("b", None, ChildType.WORKER)
    assert sup.count_children()["active"] == 1
    sup.stop()
    assert logged(tmp_path, "start").count("b") == tries
    assert logged(tmp_path, "stop")[-1:] == ["a"]
    wait_for(lambda: all(process_gone(e["pid"]) for e in calls(tmp_path, "start")))
